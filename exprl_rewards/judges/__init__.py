"""Judge backends: grade rendered prompts with an LLM.

- :class:`~exprl_rewards.judges.openai.OpenAIJudge`: any OpenAI-compatible server.
- ``VLLMJudge`` (``exprl_rewards.judges.vllm``): vLLM in-process; needs the ``vllm``
  or ``cpu`` extra and is imported only when used.
- :class:`~exprl_rewards.judges.prm.PRMJudge`: a discriminative process reward model
  (Qwen2.5-Math-PRM or Math-Shepherd convention), every step in one forward pass;
  transformers is imported only when used.
"""

from __future__ import annotations

from .base import Judge, Judgement, JudgeRequest, judge_sync, run_sync
from .cache import JudgeCache
from .openai import OpenAIJudge
from .prm import PRMJudge
from .verdict import RawOutput, TokenLogprobs, finish

__all__ = [
    "Judge",
    "JudgeCache",
    "JudgeRequest",
    "Judgement",
    "OpenAIJudge",
    "PRMJudge",
    "RawOutput",
    "TokenLogprobs",
    "finish",
    "judge_sync",
    "run_sync",
]
