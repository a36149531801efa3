"""verl: ``compute_score`` functions and process rewards as a token-level matrix.

verl 0.9 always scores through its reward loop (``RewardLoopManager``): each
``RewardLoopWorker`` starts one task per sample on its event loop, and the reward
manager (``reward.reward_manager.name=naive``) awaits a custom ``compute_score``
(``reward.custom_reward_function.path`` and ``.name``, options from
``reward.custom_reward_function.reward_kwargs``) once per sample:

- :func:`compute_score` (async, for that loop): all samples of a process share one
  judge, so one concurrency budget, one connection pool and one cache; the calls that
  arrive together (one worker's chunk of the batch) are **micro-batched** into one
  pipeline batch (up to ``batch_size``, waiting at most ``batch_wait_s``), so the
  judge's prefix cache and the group statistics see whole groups;
- :func:`compute_score_sync`: the same per sample, for verl's legacy
  ``NaiveRewardManager`` (``verl.workers.reward_manager``), which calls it in a thread;
- :func:`compute_score_batch`: verl's legacy ``BatchRewardManager`` (``batch``), once
  per batch. The reward loop has no ``batch`` manager.

Both return dicts with the **same keys for every sample**, as verl requires to build
its ``reward_extra_info``: ``score`` (the reward), ``exprl_raw`` (the judge's score on
its scale, NaN when unscored), ``exprl_unscored`` (1.0 when the judge gave no score).
With ``canary_share`` in ``reward_kwargs`` (:mod:`exprl_rewards.canaries`), each judge
batch also grades that share of canaries (never returned to verl) and every sample's
dict carries its batch's ``exprl_canary_reward``, ``exprl_honest_reward``,
``exprl_verifier_accuracy``, ``exprl_canary_share`` and ``exprl_hack_alarm``
(``alarm_window``, ``alarm_rise``); an alarm is logged as a warning. verl 0.9 puts
``reward_extra_info`` in its rollout dumps (``trainer.rollout_data_dir``) and its
validation metrics, not its training metrics.

The hidden reference comes from ``extra_info["solution"]`` and the question from
``extra_info["question"]`` (the released ExpRL data layout); ``ground_truth`` is the
fallback reference. verl needs a number for every response, so an unscored response
gets a **neutral** value, never a silent 0: by default the mean score of the scored
responses to the same question in the batch (zero advantage under GRPO), or
``neutral`` (0.5) when none was scored; ``exprl_unscored`` says which ones.

:class:`VerlReward` holds the pipeline; the module-level functions build one from
``reward_kwargs`` (``base_url``, ``model``, ``mode``, ``template``, ``slicer``,
``calibration``, ``cache``, ``guards``: default ``content-gate,neutraliser`` as in the
score CLI, ``"none"`` for none...) or ``$EXPRL_JUDGE_BASE_URL`` / ``$EXPRL_JUDGE_MODEL``,
once per configuration and process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..calibration import load_calibrator
from ..canaries import Canaries, HackAlarm, Watch
from ..errors import ConfigError, InputError
from ..guards import DEFAULT_GUARDS, get_guards
from ..judges.base import run_sync
from ..judges.openai import OpenAIJudge
from ..pipeline import BatchResult, RewardPipeline, RolloutResult
from ..rollout import Rollout
from .common import UnscoredPolicy, fill_unscored
from .offsets import token_offsets

__all__ = [
    "VerlReward",
    "compute_score",
    "compute_score_batch",
    "compute_score_sync",
    "shared_reward",
    "token_offsets",
]


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
    ) -> None:
        self.pipeline, self.unscored, self.neutral = pipeline, unscored, neutral
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
        raws = [s.raw for s in result.segments if s.raw is not None]
        raw = raws[-1] if raws and result.score is not None else math.nan
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
        except Exception as e:  # a bad batch fails its own calls, never the loop
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        filled = fill_unscored(results, self.unscored, self.neutral)
        for (_, future), value, result in zip(batch, filled, results, strict=True):
            if not future.done():
                future.set_result((value, result, hack))

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


@functools.lru_cache(maxsize=8)
def _default(config: str) -> VerlReward:
    options: dict[str, Any] = json.loads(config)
    base_url = options.pop("base_url", None) or os.environ.get("EXPRL_JUDGE_BASE_URL")
    model = options.pop("model", None) or os.environ.get("EXPRL_JUDGE_MODEL")
    if not base_url or not model:
        raise ConfigError(
            "no judge configured: set reward_kwargs base_url and model (or "
            "$EXPRL_JUDGE_BASE_URL and $EXPRL_JUDGE_MODEL)"
        )
    judge_keys = ("top_logprobs", "concurrency", "timeout", "max_tokens", "prefill", "cache",
                  "constrain_scores")  # fmt: skip
    judge_options = {k: options.pop(k) for k in judge_keys if k in options}
    judge_options.setdefault("top_logprobs", 20)
    judge = OpenAIJudge(model, base_url=base_url, **judge_options)
    reward_keys = ("unscored", "neutral", "batch_size", "batch_wait_s")
    reward_options = {k: options.pop(k) for k in reward_keys if k in options}
    share = options.pop("canary_share", None)
    window, rise = options.pop("alarm_window", 3), options.pop("alarm_rise", 0.05)
    if share:
        reward_options["canaries"] = Canaries(float(share))
        reward_options["alarm"] = HackAlarm(window=int(window), rise=float(rise))
    if "calibration" in options:
        options["calibrator"] = load_calibrator(options.pop("calibration"))
    options["guards"] = get_guards(options.pop("guards", ",".join(DEFAULT_GUARDS)))
    return VerlReward(RewardPipeline(judge, **options), **reward_options)


def shared_reward(kwargs: Mapping[str, Any]) -> VerlReward:
    """The one :class:`VerlReward` of this process for these ``reward_kwargs``: every call
    with the same options shares its judge (concurrency budget, connections, cache)."""
    return _default(json.dumps(dict(kwargs), sort_keys=True, default=str))


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """verl's per-sample custom reward for its reward loop: micro-batched on one judge.

    ``kwargs`` are ``reward_kwargs``: the judge (``base_url``, ``model``, ...), the
    pipeline (``mode``, ``template``, ...) and the batching (``batch_size``,
    ``batch_wait_s``). Extra keyword arguments verl adds are ignored.
    """
    kwargs = {k: v for k, v in kwargs.items() if k not in _VERL_EXTRAS}
    return await shared_reward(kwargs).score_one(solution_str, ground_truth, extra_info)


# Keyword arguments verl's reward managers add to the call, not ours.
_VERL_EXTRAS = ("reward_router_address", "reward_model_tokenizer")


def compute_score_sync(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """The per-sample reward for verl's legacy managers, which call it from a thread."""
    kwargs = {k: v for k, v in kwargs.items() if k not in _VERL_EXTRAS}
    return shared_reward(kwargs).score_batch([solution_str], [ground_truth], [extra_info])[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    **kwargs: Any,
) -> list[dict[str, float]]:
    """verl's batch custom reward (``reward_manager=batch``): the batch judged at once."""
    return shared_reward(kwargs).score_batch(solution_strs, ground_truths, extra_infos)
