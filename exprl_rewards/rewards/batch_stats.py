"""The training metrics the released ExpRL trainer logs, from one batch's results.

:meth:`~exprl_rewards.rewards.results.BatchResult.summary` includes them, so a trainer adapter or
the reference trainer logs the same figures the released code does, for runs to be held
side by side:

- ``raw_score_counts``: how often the judge wrote each score (``{"1": n, ..., "5": n}``;
  the number in its text, before logprob weighting and calibration);
- ``step_score_mean``: the mean calibrated score at each step position (process; the
  first 16 positions), and ``steps_per_response`` (mean, min, max);
- ``groups_all_zero``, ``groups_all_one``, ``groups_mixed``: the share of groups (prompts)
  whose scored rollouts all scored 0, all scored 1, or differ; a group of all-equal scores
  gives GRPO no signal. Groups with no scored rollout are ``groups_unscored``;
- ``last_step_mean``, ``last_step_std``: the last step's calibrated score over scored
  rollouts (the rollout's score in outcome mode).

:func:`scalar_metrics` flattens them to named numbers, for loggers that take scalars
(TRL's ``log_metric``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..judges.guards import GUARDS, GuardHit

__all__ = ["STEP_POSITIONS", "ScoredRollout", "scalar_metrics", "training_metrics"]


class _Verdict(Protocol):
    @property
    def parsed(self) -> float | None: ...


class _Step(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def score(self) -> float | None: ...


class ScoredRollout(Protocol):
    """What the metrics read of a graded rollout (:class:`~.results.RolloutResult`), so
    that this module sits below the results it summarises."""

    @property
    def group_id(self) -> str: ...

    @property
    def score(self) -> float | None: ...

    @property
    def judgements(self) -> Sequence[_Verdict]: ...

    @property
    def segments(self) -> Sequence[_Step]: ...

    @property
    def guards(self) -> Sequence[GuardHit]: ...


STEP_POSITIONS = 16


def _trimmed(values: list[float | None]) -> list[float | None] | None:
    while values and values[-1] is None:
        values.pop()
    return values or None


def _spread(lengths: list[int]) -> dict[str, float] | None:
    if not lengths:
        return None
    return {"mean": float(np.mean(lengths)), "min": min(lengths), "max": max(lengths)}


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def training_metrics(results: Sequence[ScoredRollout]) -> dict[str, Any]:
    """Score distributions, group outcomes and last-step statistics of a batch.

    >>> training_metrics([])["groups_mixed"] is None
    True
    """
    written = Counter(
        str(int(j.parsed)) if float(j.parsed).is_integer() else str(j.parsed)
        for r in results
        for j in r.judgements
        if j.parsed is not None
    )
    positions: list[list[float]] = [[] for _ in range(STEP_POSITIONS)]
    lengths, last = [], []
    by_group: dict[str, list[float]] = defaultdict(list)
    for r in results:
        lengths.append(len(r.segments))
        for s in r.segments[:STEP_POSITIONS]:
            if s.score is not None:
                positions[s.index].append(s.score)
        if r.score is not None and r.segments and r.segments[-1].score is not None:
            last.append(r.segments[-1].score)
        if r.score is not None:
            by_group[r.group_id].append(r.score)
    groups = {r.group_id for r in results}
    zero = sum(all(v == 0 for v in by_group[g]) for g in by_group)
    one = sum(all(v == 1 for v in by_group[g]) for g in by_group)
    scored = len(by_group)
    return {
        "raw_score_counts": dict(sorted(written.items())),
        "step_score_mean": _trimmed([float(np.mean(p)) if p else None for p in positions]),
        "steps_per_response": _spread(lengths),
        "groups_all_zero": _share(zero, scored),
        "groups_all_one": _share(one, scored),
        "groups_mixed": _share(scored - zero - one, scored),
        "groups_unscored": _share(len(groups) - scored, len(groups)),
        "last_step_mean": float(np.mean(last)) if last else None,
        "last_step_std": float(np.std(last)) if last else None,
    }


def scalar_metrics(results: Sequence[ScoredRollout]) -> dict[str, float]:
    """:func:`training_metrics` as named numbers: ``steps_per_response`` is its mean,
    ``step_score_mean`` becomes ``step_score_mean/1``, ``/2``...; ``raw_score_counts``
    and figures a batch does not have (None) are left out.

    >>> scalar_metrics([])
    {}
    """
    metrics = training_metrics(results)
    out: dict[str, float] = {}
    for position, value in enumerate(metrics["step_score_mean"] or [], start=1):
        if value is not None:
            out[f"step_score_mean/{position}"] = value
    if metrics["steps_per_response"] is not None:
        out["steps_per_response"] = metrics["steps_per_response"]["mean"]
    for key in ("groups_all_zero", "groups_all_one", "groups_mixed", "groups_unscored",
                "last_step_mean", "last_step_std"):  # fmt: skip
        if metrics[key] is not None:
            out[key] = float(metrics[key])
    if results:  # the share of rollouts each guard fired on: a policy gaming the judge shows
        for name in GUARDS:
            out[f"guard/{name}"] = sum(any(h.guard == name for h in r.guards)
                                       for r in results) / len(results)  # fmt: skip
    return out
