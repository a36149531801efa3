"""verifiers (PrimeIntellect, for prime-rl): an ExpRL judge plugin for verifiers v1.

verifiers resolves a plugged judge by its id (a module that exports one ``Judge``
subclass) and awaits its ``score(task, trace)`` after the task's own rewards, one trace
per call (``Task.score``). Plug this one into a task config::

    [[env.taskset.task.judges]]
    id = "exprl-judge"             # the exprl_judge package, shipped with exprl-rewards
    base_url = "http://127.0.0.1:8000/v1"
    model = "judge"
    reference_field = "answer"     # the task field that holds the reference solution
    mode = "outcome"               # or process-segment / process-prefix (reduce: mean/last)

- **One judge per process**: every trace verifiers scores goes to one shared judge
  (:func:`~exprl_rewards.adapters.verl_config.shared_reward`, keyed by the options):
  one concurrency budget, one connection pool, one cache, and the traces that arrive
  together meet in one micro-batch.
- **What the judge sees**: ``view = "last_reply"`` (the final answer, default) or
  ``"full_trace"`` (the transcript, tool calls included); the question is the task's
  prompt, or ``question_field``.
- **Unscored raises**: a response the judge gave no score for (no verdict, the judge
  unreachable) raises, so verifiers errors the rollout instead of scoring the model 0.
  A response with no content gets the scale's minimum from the content gate (a real
  0, the model's own), as verifiers' reference judge scores an empty reply 0.
- Requires ``verifiers`` (0.4, which needs ``openai<3``: use its own environment).
"""

from __future__ import annotations

from typing import Any

from verifiers.v1 import Judge, JudgeConfig, JudgeView, Trace
from verifiers.v1.judge import judge_question, judge_response
from verifiers.v1.task import TaskData

from ..judges.guards import DEFAULT_GUARDS
from ..judges.templates import Mode
from ..text.rollout import Rollout
from .verl_config import shared_reward

__all__ = ["ExpRLJudge", "ExpRLJudgeConfig"]

PLUGIN_ID = "exprl-judge"  # verifiers imports it as the top-level package exprl_judge


class ExpRLJudgeConfig(JudgeConfig):  # type: ignore[misc]
    """The judge endpoint (``base_url``, ``model``, ``api_key_var`` from verifiers'
    client config) and the ExpRL pipeline's options."""

    id: str = PLUGIN_ID
    model: str = "judge"
    mode: Mode = "outcome"
    template: str | None = None
    """A built-in template name or a file; default: the mode's score-only form."""
    reference_field: str = "answer"
    question_field: str = ""
    view: JudgeView = "last_reply"
    guards: str = ",".join(DEFAULT_GUARDS)
    top_logprobs: int = 20
    concurrency: int = 16


class ExpRLJudge(Judge[float, ExpRLJudgeConfig]):  # type: ignore[misc]
    """Grades a verifiers trace against the task's reference with the ExpRL pipeline."""

    def _options(self) -> dict[str, Any]:
        c = self.config
        return {
            "base_url": c.base_url, "model": c.model, "mode": c.mode,
            "template": c.template or f"{c.mode}-score-only", "guards": c.guards,
            "top_logprobs": c.top_logprobs or None, "concurrency": c.concurrency,
        }  # fmt: skip

    async def score(self, task: TaskData, trace: Trace) -> float:
        reference = getattr(task, self.config.reference_field, None)
        if not isinstance(reference, str) or not reference.strip():
            raise ValueError(
                f"the exprl judge found no reference in task field "
                f"{self.config.reference_field!r}; set reference_field"
            )
        rollout = Rollout(
            id=trace.id, group_id=str(getattr(task, "idx", None) or trace.id),
            question=judge_question(task, self.config.question_field), reference=reference,
            response=judge_response(trace, self.config.view),
        )  # fmt: skip
        _, result, _ = await shared_reward(self._options()).result_one(rollout)
        if result.score is None:
            raise RuntimeError(f"the exprl judge gave no score: {result.reason}")
        return result.score
