"""TRL: a reward function for ``GRPOTrainer(reward_funcs=[...])``.

TRL (tested with the version pinned in ``exprl_rewards.adapters.TESTED``) calls
``f(prompts=..., completions=..., completion_ids=..., **columns)`` with every dataset
column (but ``prompt``) as a list, one entry per completion, plus ``trainer_state``,
``log_metric``, ``log_extra`` and, with environments, ``environments``. A class instance
(not a closure) pickles, and its ``__name__`` is what TRL logs (``rewards/<name>/mean``).

**What is graded** is everything the policy produced: a string completion as it is; a
conversational one (a list of messages, tools included) rendered by
:func:`~exprl_rewards.adapters.messages.render_messages`: reasoning, content parts,
tool calls and tool results, in order. A completion that ends in a tool call still
waiting for its result is graded as it stands (``tool_call_end="grade"``, the default:
progress counts) or unscored with that reason (``"unscored"``); never a crash.

**Unscored** is ``None`` by default. TRL leaves a row out of its group's baseline only
when *every* reward function returns None for it; next to a second reward function it
sums with ``nansum``, so our None counts as 0 there. With several reward functions,
pass ``unscored="group-mean"`` (the mean of the prompt's scored completions: zero
advantage) or a number. The judge's reason and raw score per completion go to TRL's
``log_extra`` (``<name>_reason``, ``<name>_raw``); the unscored fraction and the
released trainer's batch metrics go to ``log_metric`` (``<name>/unscored_frac``,
``<name>/groups_mixed``, ``<name>/last_step_mean``, ``<name>/step_score_mean/1``...:
:func:`~exprl_rewards.rewards.batch_stats.scalar_metrics`), which TRL averages per logging step.

>>> from exprl_rewards.judges import OpenAIJudge
>>> from exprl_rewards.rewards.pipeline import RewardPipeline
>>> judge = OpenAIJudge("judge", base_url="http://127.0.0.1:8000/v1")
>>> reward = TRLReward(RewardPipeline(judge, mode="outcome"), reference_column="solution")
>>> reward.__name__
'exprl'

Process modes give one scalar per completion through the pipeline's ``reduce``:

==========  ==========================================  =============================
reduce      the completion's reward                     closest ExpRL variant
==========  ==========================================  =============================
``last``    the judge's score of the whole response     process-prefix's final value;
            (process-prefix: the full prefix)           the outcome reward
``mean``    the mean of its step scores                 process-segment (released)
                                                        averaged: sum of DeltaNorm
                                                        advantages is not it
``min``     its weakest step                            PRM-style "first error"
==========  ==========================================  =============================

Per-step advantages do not fit TRL's scalar API; the verl adapter's token-level
rewards carry them.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..errors import ConfigError, InputError
from ..rewards.batch_stats import scalar_metrics
from ..rewards.canaries import Canaries, HackAlarm, Watch
from ..rewards.pipeline import BatchResult, RewardPipeline, RolloutResult
from ..text.rollout import Rollout
from .common import UnscoredPolicy, check_answered, fill_unscored
from .messages import ends_in_tool_call, prompt_question, render_messages

__all__ = ["AsyncTRLReward", "TRLReward"]

ToolCallEnd = Literal["grade", "unscored"]
TOOL_CALL_END = "ends in a tool call with no answer after it"


def _group(prompt: Any) -> str:
    """Completions of the same prompt form a group."""
    return hashlib.sha256(repr(prompt).encode()).hexdigest()[:16]


def _all_ranks_group_scores(results: Sequence[RolloutResult]) -> dict[str, list[float]] | None:
    """Each group's scored values on every process, when TRL runs on several: TRL scores
    each process's share of the batch, and a group's completions may be split between
    processes, so a group mean from one share would pass a partial group as whole. None
    on one process. Every process calls its reward functions for every batch, so the
    gather runs in step."""
    dist = sys.modules.get("torch.distributed")  # loaded by TRL when it runs distributed
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    if dist.get_world_size() == 1:
        return None
    local = [(r.group_id, r.score) for r in results if r.score is not None]
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, local)
    out: dict[str, list[float]] = {}
    for part in every:
        for group, score in part:
            out.setdefault(group, []).append(score)
    return out


class _TRLBase:
    def __init__(
        self,
        pipeline: RewardPipeline,
        *,
        reference_column: str = "solution",
        question_column: str | None = None,
        name: str = "exprl",
        tool_call_end: ToolCallEnd = "grade",
        unscored: UnscoredPolicy | None = None,
        canaries: Canaries | None = None,
        alarm: HackAlarm | None = None,
    ) -> None:
        if tool_call_end not in ("grade", "unscored"):
            raise ConfigError(f"tool_call_end must be 'grade' or 'unscored', not {tool_call_end!r}")
        self.pipeline = pipeline
        self.reference_column, self.question_column = reference_column, question_column
        self.tool_call_end, self.unscored = tool_call_end, unscored
        self.__name__ = name
        self.watch = Watch(pipeline, canaries, alarm) if canaries or alarm else None
        self.calls = 0  # the step when TRL passes no trainer_state

    def step(self, columns: Mapping[str, Any]) -> int:
        """The training step of this call: TRL's ``trainer_state.global_step``."""
        self.calls += 1
        state = columns.get("trainer_state")
        return int(getattr(state, "global_step", self.calls - 1))

    def rollouts(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Any]
    ) -> list[Rollout]:
        """The rollouts for one call: completions of the same prompt form a group. A
        completion left unscored before judging (``tool_call_end="unscored"``) has no
        rollout here; :meth:`skipped` lists them."""
        if len(prompts) != len(completions):
            raise InputError(f"{len(prompts)} prompts but {len(completions)} completions")
        references = columns.get(self.reference_column)
        if references is None:
            raise InputError(
                f"the dataset has no {self.reference_column!r} column for the reference "
                f"solution (columns: {', '.join(sorted(columns)) or 'none'}); "
                "pass reference_column="
            )
        questions = columns.get(self.question_column) if self.question_column else None
        if self.question_column and questions is None:
            raise InputError(f"the dataset has no {self.question_column!r} column")
        out = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            where = f"completion {i}"
            if i in self.skipped(completions):
                continue
            question = (
                str(questions[i]) if questions is not None else prompt_question(prompt, where)
            )
            reference = references[i]
            if not isinstance(reference, str):
                raise InputError(f"{where}: column {self.reference_column!r} is not a string")
            group = _group(prompt)
            out.append(
                Rollout(
                    id=f"{group}:{i}",
                    group_id=group,
                    question=question,
                    reference=reference,
                    response=render_messages(completion, where),
                )
            )
        return out

    def skipped(self, completions: Sequence[Any]) -> set[int]:
        """The completions unscored without a judge call: those ending in a tool call,
        when ``tool_call_end="unscored"``."""
        if self.tool_call_end == "grade":
            return set()
        return {i for i, c in enumerate(completions) if ends_in_tool_call(c)}

    def finish(
        self,
        batch: BatchResult,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        columns: Mapping[str, Any],
        hack: Mapping[str, float] | None = None,
    ) -> list[float | None]:
        """The rewards in completion order, logged where TRL offers ``log_metric`` and
        ``log_extra``."""
        check_answered(batch.results, "TRL")
        skipped = self.skipped(completions)
        judged = iter(batch.results)
        results = [
            RolloutResult(f"skipped:{i}", _group(prompts[i]), None, TOOL_CALL_END, None, ())
            if i in skipped
            else next(judged)
            for i in range(len(completions))
        ]
        log_metric, log_extra = columns.get("log_metric"), columns.get("log_extra")
        if callable(log_metric) and results:
            unscored = sum(r.score is None for r in results)
            log_metric(f"{self.__name__}/unscored_frac", unscored / len(results))
            for key, value in {**scalar_metrics(batch.results), **(hack or {})}.items():
                if math.isfinite(value):  # no canary scored this call: nothing to average
                    log_metric(f"{self.__name__}/{key}", value)
        if callable(log_extra) and results:
            log_extra(f"{self.__name__}_reason", [r.reason for r in results])
            log_extra(
                f"{self.__name__}_raw",
                [r.segments[-1].raw if r.segments else None for r in results],
            )
        if self.unscored is None:
            return [r.score for r in results]
        groups = _all_ranks_group_scores(results) if self.unscored == "group-mean" else None
        return list(fill_unscored(results, self.unscored, group_scores=groups))


class TRLReward(_TRLBase):
    """A synchronous TRL reward function backed by a :class:`RewardPipeline`.

    Args:
        pipeline: the judge, mode, template and calibration to use.
        reference_column: the dataset column holding the hidden reference solution.
        question_column: the column holding the question; default: the prompt's text
            (its last user message when conversational).
        name: what TRL logs the reward as.
        tool_call_end: a completion that ends in a tool call: ``"grade"`` it as it
            stands, or leave it ``"unscored"`` without a judge call.
        unscored: None (TRL's None), ``"group-mean"`` or a number (see the module docs).
        canaries: canary rollouts graded beside each call's completions (never returned
            to TRL); with ``alarm`` (default :class:`~exprl_rewards.rewards.canaries.HackAlarm`)
            their reward, the verifier's accuracy and the alarm go to ``log_metric`` as
            ``<name>/hack/...`` (:mod:`exprl_rewards.rewards.canaries`).

    Safe to call from inside a running event loop (it judges on a helper thread).
    """

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        rollouts = self.rollouts(prompts, completions, columns)
        if self.watch is None:
            return self.finish(self.pipeline.score_sync(rollouts), prompts, completions, columns)
        batch, hack = self.watch.score_sync(rollouts, self.step(columns))
        return self.finish(batch, prompts, completions, columns, hack)


class AsyncTRLReward(_TRLBase):
    """The same as :class:`TRLReward` as a coroutine: TRL gathers async rewards together."""

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        rollouts = self.rollouts(prompts, completions, columns)
        if self.watch is None:
            batch = await self.pipeline.score(rollouts)
            return self.finish(batch, prompts, completions, columns)
        batch, hack = await self.watch.score(rollouts, self.step(columns))
        return self.finish(batch, prompts, completions, columns, hack)
