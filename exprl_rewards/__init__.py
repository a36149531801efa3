"""exprl-rewards: reference-guided LLM-judge rewards and dense advantages for RL (ExpRL).

The data flows one way::

    rollout -> slicer -> prompt -> judge -> parser -> calibration -> rewards
            -> advantages -> token broadcast -> trainer adapter

Importing the package loads numpy, jinja2, openai and tenacity, never vLLM, torch or
transformers: the in-process vLLM judge (``exprl_rewards.judges.vllm``) imports vLLM
when one is created and names the ``pip install`` extra when it is missing.
"""

from __future__ import annotations

from .cli.api import score_file
from .errors import (
    AlignmentError,
    ConfigError,
    ExpRLError,
    InputError,
    JudgeUnavailable,
    MissingExtraError,
)
from .judges import Judge, JudgeCache, Judgement, JudgeRequest, OpenAIJudge, judge_sync
from .judges.parsing import ParsedScore, expected_score, normalize_score, parse_score
from .judges.templates import TEMPLATES, JudgeTemplate, get_template, load_template
from .rewards.advantages import (
    OutcomeAdvantages,
    ProcessAdvantages,
    delta_norm,
    end_norm,
    group_norm,
    outcome_advantages,
    process_advantages,
    released_prefix,
    return_to_go,
)
from .rewards.canaries import Canaries, HackAlarm, Watch
from .rewards.kl import kl_penalty
from .rewards.pipeline import BatchResult, RewardPipeline, RolloutResult, SegmentResult
from .rewards.routing import RoutedPipeline, released_route, released_routes
from .text.alignment import segment_token_ranges, token_segment_ids
from .text.ragged import Ragged
from .text.rollout import Rollout, Score, Segment, scores_to_array
from .text.slicers import PRESETS, RegexSlicer, Slicer, delimiter_slicer, get_slicer
from .text.tokens import TokenAdvantages, broadcast_to_tokens

__version__ = "0.1.0.dev0"

__all__ = [
    "PRESETS",
    "TEMPLATES",
    "AlignmentError",
    "BatchResult",
    "Canaries",
    "ConfigError",
    "ExpRLError",
    "HackAlarm",
    "InputError",
    "Judge",
    "JudgeCache",
    "JudgeRequest",
    "JudgeTemplate",
    "JudgeUnavailable",
    "Judgement",
    "MissingExtraError",
    "OpenAIJudge",
    "OutcomeAdvantages",
    "ParsedScore",
    "ProcessAdvantages",
    "Ragged",
    "RegexSlicer",
    "RewardPipeline",
    "Rollout",
    "RolloutResult",
    "RoutedPipeline",
    "Score",
    "Segment",
    "SegmentResult",
    "Slicer",
    "TokenAdvantages",
    "Watch",
    "__version__",
    "broadcast_to_tokens",
    "delimiter_slicer",
    "delta_norm",
    "end_norm",
    "expected_score",
    "get_slicer",
    "get_template",
    "group_norm",
    "judge_sync",
    "kl_penalty",
    "load_template",
    "normalize_score",
    "outcome_advantages",
    "parse_score",
    "process_advantages",
    "released_prefix",
    "released_route",
    "released_routes",
    "return_to_go",
    "score_file",
    "scores_to_array",
    "segment_token_ranges",
    "token_segment_ids",
]
