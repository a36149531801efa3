"""verl's reward as a class: :class:`VerlReward` holds the pipeline and answers verl's
calls in its shapes (see :mod:`exprl_rewards.adapters.verl` for how verl calls it)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import InputError
from ..judges.base import run_sync
from ..rewards.canaries import Canaries, HackAlarm, Watch
from ..rewards.pipeline import BatchResult, RewardPipeline, RolloutResult
from ..text.rollout import Rollout
from .common import UnscoredPolicy, check_answered, fill_unscored, judge_raw
from .verl_groups import GroupFill

__all__ = ["HACK_KEYS", "VerlReward"]

_Future = asyncio.Future[tuple[float, RolloutResult, Mapping[str, float]]]
log = logging.getLogger("exprl_rewards")
# hack/ metrics each sample's dict carries when canaries are on (exprl_<key>)
HACK_KEYS = {f"exprl_{k}": f"hack/{k}" for k in (
    "canary_reward", "honest_reward", "verifier_accuracy", "canary_share")} | {
    "exprl_hack_alarm": "hack/alarm"}  # fmt: skip


class VerlReward:
    """ExpRL rewards in verl's shapes.

    Args:
        pipeline: the judge, mode, template and calibration.
        unscored: ``"group-mean"`` (default) or a number given to unscored responses.
        neutral: the value when a whole group is unscored under ``"group-mean"``.
        batch_size, batch_wait_s: the micro-batch: calls arriving within
            ``batch_wait_s`` are judged together, up to ``batch_size``.
        canaries, alarm: canaries and the hack alarm (:mod:`exprl_rewards.rewards.canaries`).
        group_size: responses per prompt (``actor_rollout_ref.rollout.n``): on the
            streaming path an unscored response waits for its whole group and gets its
            mean (:class:`~exprl_rewards.adapters.verl_groups.GroupFill`); None fills from
            the micro-batch alone.
        group_wait_s: the longest an unscored response waits for its group.
    """

    def __init__(
        self,
        pipeline: RewardPipeline,
        *,
        unscored: UnscoredPolicy = "group-mean",
        neutral: float = 0.5,
        batch_size: int = 256,
        batch_wait_s: float = 0.05,
        canaries: Canaries | None = None,
        alarm: HackAlarm | None = None,
        group_size: int | None = None,
        group_wait_s: float = 60.0,
    ) -> None:
        self.pipeline, self.unscored, self.neutral = pipeline, unscored, neutral
        self.groups = (
            GroupFill(group_size, wait_s=group_wait_s, neutral=neutral)
            if group_size is not None and unscored == "group-mean"
            else None
        )
        self.watch = Watch(pipeline, canaries, alarm) if canaries or alarm else None
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_s
        self.flushes = 0  # micro-batches judged by :meth:`score_one`
        self.steps = 0  # batches the alarm has seen
        self._pending: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[tuple[Rollout, _Future]]
        ] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pending"] = None  # futures belong to this process's loops
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pending = weakref.WeakKeyDictionary()

    def _row(
        self, value: float, result: RolloutResult, hack: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        raw = judge_raw(result)
        raw = math.nan if raw is None else raw
        row = {"score": value, "exprl_raw": raw, "exprl_unscored": float(result.score is None)}
        if self.watch is not None:  # the same keys for every sample, as verl requires
            row.update({k: (hack or {}).get(v, math.nan) for k, v in HACK_KEYS.items()})
        return row

    async def _score(self, rollouts: list[Rollout]) -> tuple[BatchResult, dict[str, float]]:
        """The pipeline's batch, with the canaries and the alarm when watched."""
        if self.watch is None:
            return await self.pipeline.score(rollouts), {}
        self.steps += 1
        batch, hack = await self.watch.score(rollouts, self.steps - 1)
        if hack["hack/alarm"]:
            log.warning("exprl hack alarm: %s", self.watch.alarm.reasons[-1])
        return batch, hack

    async def score_one(
        self, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None
    ) -> dict[str, float]:
        """One response's dict, judged in a micro-batch with the calls that arrive with it."""
        (rollout,) = self.rollouts([solution_str], [ground_truth], [extra_info])
        return self._row(*await self.result_one(rollout))

    async def result_one(
        self, rollout: Rollout
    ) -> tuple[float, RolloutResult, Mapping[str, float]]:
        """One rollout's reward (unscored filled in), full result and its micro-batch's
        ``hack/`` metrics (empty when not watched), micro-batched."""
        loop = asyncio.get_running_loop()
        pending = self._pending.setdefault(loop, [])
        future: _Future = loop.create_future()
        pending.append((rollout, future))
        if len(pending) >= self.batch_size:
            self._flush(loop)
        elif len(pending) == 1:
            loop.call_later(self.batch_wait_s, self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, [])
        if batch:
            self.flushes += 1
            loop.create_task(self._judge(batch))

    async def _judge(self, batch: list[tuple[Rollout, _Future]]) -> None:
        # Ids are unique within a pipeline batch; each call's own id is its position.
        rollouts = [dataclasses.replace(r, id=str(i)) for i, (r, _) in enumerate(batch)]
        try:
            scored, hack = await self._score(rollouts)
            results = scored.results
            check_answered(results)  # shared by verl, OpenRLHF's reward file and slime
        except Exception as e:  # a bad batch fails its own calls, never the loop
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        filled = fill_unscored(results, self.unscored, self.neutral)
        for (rollout, future), value, result in zip(batch, filled, results, strict=True):
            answer = functools.partial(_answer, future, result=result, hack=hack)
            if self.groups is None:
                answer(value)
            else:  # scored: now; unscored: once its whole group is judged
                self.groups.add(rollout.group_id, result.score, answer)

    def rollouts(
        self,
        solution_strs: Sequence[str],
        ground_truths: Sequence[Any],
        extra_infos: Sequence[Mapping[str, Any] | None],
        offsets: Sequence[Sequence[tuple[int, int]] | None] | None = None,
    ) -> list[Rollout]:
        """The rollouts verl's arguments describe; ``offsets`` are per-token spans."""
        out = []
        for i, (response, truth, extra) in enumerate(
            zip(solution_strs, ground_truths, extra_infos, strict=True)
        ):
            extra = extra or {}
            reference = extra.get("solution", truth)
            if not isinstance(reference, str) or not reference.strip():
                raise InputError(
                    f"sample {i}: no reference solution: extra_info['solution'] is missing and "
                    f"ground_truth is {truth!r:.60}"
                )
            question = extra.get("question", "")
            if not isinstance(question, str):
                raise InputError(f"sample {i}: extra_info['question'] is not a string")
            group = str(extra.get("index", extra.get("uid", f"{question}\x00{reference}")))
            spans = offsets[i] if offsets is not None else None
            out.append(
                Rollout(
                    id=str(i), group_id=group, question=question, reference=reference,
                    response=response, token_offsets=tuple(spans) if spans else None,
                )
            )  # fmt: skip
        return out

    def score_batch(
        self,
        solution_strs: Sequence[str],
        ground_truths: Sequence[Any],
        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[dict[str, float]]:
        """One dict per response: ``score``, ``exprl_raw``, ``exprl_unscored``."""
        extras = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
        rollouts = self.rollouts(solution_strs, ground_truths, extras)
        batch, hack = run_sync(lambda: self._score(rollouts))
        check_answered(batch.results, "verl")
        filled = fill_unscored(batch.results, self.unscored, self.neutral)
        return [self._row(v, r, hack) for v, r in zip(filled, batch.results, strict=True)]

    def token_level_rewards(
        self,
        solution_strs: Sequence[str],
        offsets: Sequence[Sequence[tuple[int, int]]],
        response_length: int,
        ground_truths: Sequence[Any],
        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        values: Literal["score", "advantage"] = "score",
        place: Literal["all", "last"] = "last",
    ) -> tuple[npt.NDArray[np.float32], dict[str, list[float]]]:
        """The ``[batch, response_length]`` reward matrix of a process judge.

        Args:
            solution_strs: the decoded responses.
            offsets: each response token's ``(start, end)`` characters in its
                string (see :func:`token_offsets`); tokens past ``response_length``
                are cut, padding stays 0.
            response_length: the padded response width of the batch.
            values: each segment's calibrated ``score`` (verl computes advantages) or
                its ExpRL ``advantage`` (the pipeline's process estimator).
            place: the value at every token of its segment (``all``) or at the
                segment's last token only (``last``, the usual for token rewards).

        Returns:
            ``(matrix, extra)``: float32 rewards, and per-sample ``exprl_score`` and
            ``exprl_unscored`` lists. An unscored response's row is all 0, flagged.
        """
        extras = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
        rollouts = self.rollouts(solution_strs, ground_truths, extras, offsets)
        batch = self.pipeline.score_sync(rollouts)
        check_answered(batch.results, "verl")
        matrix = np.zeros((len(rollouts), response_length), dtype=np.float32)
        for row, r in enumerate(batch.results):
            if r.score is None:
                continue
            for seg in r.segments:
                value = seg.score if values == "score" else seg.advantage
                if value is None or seg.tokens is None or seg.tokens[1] <= seg.tokens[0]:
                    continue
                start, end = seg.tokens[0], min(seg.tokens[1], response_length)
                if start >= end:
                    continue
                if place == "all":
                    matrix[row, start:end] = value
                else:
                    matrix[row, end - 1] = value
        return matrix, {
            "exprl_score": [math.nan if r.score is None else r.score for r in batch.results],
            "exprl_unscored": [float(r.score is None) for r in batch.results],
        }


def _answer(
    future: _Future, value: float, *, result: RolloutResult, hack: Mapping[str, float]
) -> None:
    if not future.done():
        future.set_result((value, result, hack))
