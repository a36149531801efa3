"""Advantages from judge scores: outcome (one per rollout) and process (one per segment).

Everything is vectorised numpy over the whole batch: groups are given by id, process
scores are :class:`~exprl_rewards.text.ragged.Ragged` rows (one row of segment scores per
rollout). Scores are usually the judge's normalised [0, 1] values.

**Unscored is not zero.** A NaN score means the judge gave no score. An unscored
rollout is left out of its group's statistics and gets advantage NaN with ``mask``
False; the released ExpRL code instead folded parse failures in as 0, which drags the
group mean down and rewards every other rollout of the prompt. In process mode one
unscored segment masks its whole trajectory, as released: a delta across a missing
score is undefined, and guessing one would invent credit.

Outcome estimators (:func:`outcome_advantages`), same value on every token:

- ``grpo``: ``(s - mean) / (std + eps)`` per group; ``std="sample"`` (ddof 1, as verl's
  ``torch.std``) or ``"population"``.
- ``drgrpo``: ``s - mean`` (Dr. GRPO: no std division).
- ``rloo``: ``s - mean of the others`` (leave one out): unbiased for the gradient of the
  expected score.

A group with one scored rollout carries no relative information; ``singleton`` says
what it gets: ``"zero"`` (default), ``"raw"`` (the score itself, as verl's GRPO does
with mean 0 and std 1), or ``"nan"`` (masked).

Process estimators (:func:`process_advantages`), per segment k = 1..K of scores s_k:

- ``delta`` (DeltaNorm, released main): r_1 = s_1 - s_K, r_k = s_k - s_{k-1}; K = 1
  gives s_1. Sums to 0 over a trajectory when K > 1.
- ``end`` (EndNorm): s_k - s_K.
- ``group`` (GroupNorm): s_k minus the mean of every segment score of the group's
  scored trajectories (the intended baseline; the released one divided by the padded
  length, leaving it near 0).
- ``prefix`` (released, unused): A_1 = s_1, A_k = s_k - s_{k-1} + s_K.
- ``rtg``: discounted return-to-go of the increments r_k = s_k - s_{k-1} (s_0 = 0);
  with gamma = 1 this is s_K - s_{k-1}, an unbiased estimate of the gradient of the
  expected final score (the subtracted s_{k-1} depends only on earlier actions).
  ``normalize=True`` first standardises the increments within each group, as
  DeepSeekMath's process supervision does with its step rewards.

``python -m exprl_rewards.verify`` measures what each of these optimises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, InputError, unknown_name
from ..text.ragged import Ragged

__all__ = [
    "OutcomeAdvantages",
    "ProcessAdvantages",
    "delta_norm",
    "end_norm",
    "group_norm",
    "outcome_advantages",
    "process_advantages",
    "released_prefix",
    "return_to_go",
]

OutcomeEstimator = Literal["grpo", "drgrpo", "rloo"]
ProcessEstimator = Literal["delta", "end", "group", "prefix", "rtg"]
StdKind = Literal["sample", "population"]
Singleton = Literal["zero", "raw", "nan"]
FloatArray = npt.NDArray[np.float64]
GroupIds = Sequence[Any] | npt.NDArray[Any]


@dataclass(frozen=True, eq=False)
class OutcomeAdvantages:
    """One advantage per rollout; ``values`` is NaN exactly where ``mask`` is False."""

    values: FloatArray
    mask: npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class ProcessAdvantages:
    """One advantage per segment; ``mask`` is per rollout, and a masked rollout's
    segments are all NaN."""

    values: Ragged
    mask: npt.NDArray[np.bool_]


def _scores(values: Any) -> FloatArray:
    s = np.asarray(values, dtype=np.float64)
    if s.ndim != 1:
        raise InputError(f"scores must be 1-D, got shape {s.shape}")
    if np.isinf(s).any():
        raise InputError("scores contain +/-inf; use NaN for an unscored item")
    return s


def _group_index(group_ids: GroupIds, n: int) -> tuple[npt.NDArray[np.int64], int]:
    ids = np.asarray(group_ids)
    if ids.shape != (n,):
        raise InputError(f"need one group id per item: {n} items but group_ids {ids.shape}")
    uniques, inverse = np.unique(ids, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), int(uniques.size)


def _group_stats(
    x: FloatArray, group: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_], n_groups: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Count, mean and sum of squared deviations of ``x[ok]`` per group."""
    count = np.bincount(group[ok], minlength=n_groups).astype(np.float64)
    total = np.bincount(group[ok], weights=x[ok], minlength=n_groups)
    mean: FloatArray = np.divide(total, count, out=np.full(n_groups, np.nan), where=count > 0)
    dev = x - mean[group]
    sq = np.bincount(group[ok], weights=dev[ok] ** 2, minlength=n_groups).astype(np.float64)
    return count, mean, sq


def _std(count: FloatArray, sq: FloatArray, kind: StdKind) -> FloatArray:
    if kind not in get_args(StdKind):
        raise ConfigError(f"std must be 'sample' or 'population', got {kind!r}")
    dof = count - (1.0 if kind == "sample" else 0.0)
    std: FloatArray = np.sqrt(np.divide(sq, dof, out=np.zeros_like(sq), where=dof > 0))
    return std


def outcome_advantages(
    scores: Sequence[float | None] | FloatArray,
    group_ids: GroupIds,
    *,
    estimator: OutcomeEstimator = "grpo",
    std: StdKind = "sample",
    eps: float = 1e-6,
    singleton: Singleton = "zero",
) -> OutcomeAdvantages:
    """Group-relative advantages of one score per rollout.

    Args:
        scores: one score per rollout; NaN (or None) for unscored.
        group_ids: one id per rollout; rollouts of the same prompt share it.
        estimator: ``"grpo"`` (default, as released), ``"drgrpo"`` or ``"rloo"``.
        std: ``"sample"`` (default) or ``"population"`` standard deviation, for grpo.
        eps: added to the std, as released (1e-6).
        singleton: what a group with one scored rollout gets: ``"zero"``, ``"raw"``
            or ``"nan"``.

    Returns:
        :class:`OutcomeAdvantages`, NaN and masked where the score is NaN.

    >>> a = outcome_advantages([1.0, 0.0, None, 0.5], ["q", "q", "q", "r"])
    >>> np.round(a.values, 3).tolist(), a.mask.tolist()
    ([0.707, -0.707, nan, 0.0], [True, True, False, True])
    """
    s = np.array([np.nan if v is None else v for v in scores], dtype=np.float64)
    s = _scores(s)
    group, n_groups = _group_index(group_ids, s.size)
    ok = ~np.isnan(s)
    count, mean, sq = _group_stats(s, group, ok, n_groups)
    dev = s - mean[group]
    n = count[group]
    if estimator == "grpo":
        adv = dev / (_std(count, sq, std)[group] + eps)
    elif estimator == "drgrpo":
        adv = dev
    elif estimator == "rloo":
        adv = dev * np.divide(n, n - 1, out=np.zeros_like(n), where=n > 1)
    else:
        raise unknown_name("outcome estimator", estimator, get_args(OutcomeEstimator))
    lone = ok & (n == 1)
    if singleton == "zero":
        adv[lone] = 0.0
    elif singleton == "raw":
        adv[lone] = s[lone]
    elif singleton == "nan":
        ok = ok & ~lone
    else:
        raise ConfigError(f"singleton must be 'zero', 'raw' or 'nan', got {singleton!r}")
    adv[~ok] = np.nan
    return OutcomeAdvantages(adv, ok)


class _Rows:
    """Per-segment bookkeeping shared by the process estimators."""

    def __init__(self, scores: Ragged | Sequence[Sequence[float | None]], last: Any = None) -> None:
        self.ragged = scores if isinstance(scores, Ragged) else Ragged.from_rows(scores)
        self.s = _scores(self.ragged.values)
        lengths = self.ragged.lengths
        self.row = self.ragged.row_ids
        self.first = self.ragged.positions == 0
        self.single = np.repeat(lengths == 1, lengths)
        # Each row's last score (or the given outcome), repeated on every segment of the row.
        if last is None:
            ends = np.maximum(self.ragged.starts + lengths - 1, 0)
            s_k = self.s[ends] if self.s.size else np.zeros(len(lengths))
        else:
            s_k = _scores(last)
            if s_k.shape != lengths.shape:
                raise InputError(f"last: one value per rollout ({len(lengths)}), got {s_k.shape}")
        self.s_last = np.repeat(s_k, lengths)
        self.prev = np.roll(self.s, 1)
        unscored = np.bincount(self.row, weights=np.isnan(self.s), minlength=len(lengths))
        self.mask = (unscored == 0) & (lengths > 0) & ~np.isnan(s_k)

    def finish(self, values: FloatArray) -> ProcessAdvantages:
        values = np.where(self.mask[self.row], values, np.nan)
        return ProcessAdvantages(self.ragged.with_values(values), self.mask.copy())


def delta_norm(
    scores: Ragged | Sequence[Sequence[float | None]], *, last: Any = None
) -> ProcessAdvantages:
    """DeltaNorm, as released: r_1 = s_1 - s_K, r_k = s_k - s_{k-1}; K = 1 gives s_1.

    ``last`` (one value per rollout) replaces s_K: the released
    ``which_last_step="outcome"``, a rule-based verifier's final-answer reward in place of
    the judge's last-step score; a NaN masks its rollout. (So does EndNorm's and the
    prefix variant's.)

    >>> delta_norm([[0.25, 0.5, 1.0], [0.5]]).values.rows()
    [array([-0.75,  0.25,  0.5 ]), array([0.5])]
    """
    r = _Rows(scores, last)
    adv = np.where(r.first, r.s - r.s_last, r.s - r.prev)
    return r.finish(np.where(r.single, r.s, adv))


def end_norm(
    scores: Ragged | Sequence[Sequence[float | None]], *, last: Any = None
) -> ProcessAdvantages:
    """EndNorm: A_k = s_k - s_K.

    >>> end_norm([[0.25, 0.5, 1.0]]).values.values.tolist()
    [-0.75, -0.5, 0.0]
    """
    r = _Rows(scores, last)
    return r.finish(r.s - r.s_last)


def released_prefix(
    scores: Ragged | Sequence[Sequence[float | None]], *, last: Any = None
) -> ProcessAdvantages:
    """The released prefix variant: A_1 = s_1, A_k = s_k - s_{k-1} + s_K.

    >>> released_prefix([[0.25, 0.5, 1.0]]).values.values.tolist()
    [0.25, 1.25, 1.5]
    """
    r = _Rows(scores, last)
    return r.finish(np.where(r.first, r.s, r.s - r.prev + r.s_last))


def group_norm(
    scores: Ragged | Sequence[Sequence[float | None]], group_ids: GroupIds
) -> ProcessAdvantages:
    """GroupNorm: s_k minus the mean of all segment scores of the group's scored rollouts.

    >>> group_norm([[0.0, 1.0], [0.5]], ["q", "q"]).values.values.tolist()
    [-0.5, 0.5, 0.0]
    """
    r = _Rows(scores)
    group, n_groups = _group_index(group_ids, len(r.mask))
    seg_group = group[r.row]
    _, mean, _ = _group_stats(r.s, seg_group, r.mask[r.row], n_groups)
    return r.finish(r.s - mean[seg_group])


def return_to_go(
    scores: Ragged | Sequence[Sequence[float | None]],
    *,
    gamma: float = 1.0,
    group_ids: GroupIds | None = None,
    normalize: bool = False,
    std: StdKind = "sample",
    eps: float = 1e-6,
) -> ProcessAdvantages:
    """Discounted return-to-go of the score increments r_k = s_k - s_{k-1}, s_0 = 0.

    Args:
        scores: one row of segment scores per rollout.
        gamma: discount in (0, 1]; 1 gives A_k = s_K - s_{k-1}.
        group_ids: one id per rollout; needed when ``normalize`` is True.
        normalize: standardise the increments within each group before summing.
        std, eps: as for :func:`outcome_advantages`, when normalising.

    >>> return_to_go([[0.25, 0.5, 1.0]]).values.values.tolist()
    [1.0, 0.75, 0.5]
    """
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"gamma must be in (0, 1], got {gamma}")
    r = _Rows(scores)
    inc = np.where(r.first, r.s, r.s - r.prev)
    if normalize:
        if group_ids is None:
            raise ConfigError("return_to_go(normalize=True) needs group_ids")
        group, n_groups = _group_index(group_ids, len(r.mask))
        seg_group = group[r.row]
        count, mean, sq = _group_stats(inc, seg_group, r.mask[r.row], n_groups)
        inc = (inc - mean[seg_group]) / (_std(count, sq, std)[seg_group] + eps)
    padded, _ = r.ragged.with_values(np.nan_to_num(inc)).to_padded(fill=0.0)
    acc = np.zeros(padded.shape[0])
    for k in range(padded.shape[1] - 1, -1, -1):  # one step per segment, vectorised over rows
        acc = padded[:, k] + gamma * acc
        padded[:, k] = acc
    return r.finish(padded[r.row, r.ragged.positions])


def process_advantages(
    scores: Ragged | Sequence[Sequence[float | None]],
    estimator: ProcessEstimator = "delta",
    *,
    group_ids: GroupIds | None = None,
    last: Any = None,
    **options: Any,
) -> ProcessAdvantages:
    """Per-segment advantages by the named estimator (default ``"delta"``, as released).

    Args:
        scores: one row of segment scores per rollout (NaN for unscored).
        estimator: ``"delta"``, ``"end"``, ``"group"``, ``"prefix"`` or ``"rtg"``.
        group_ids: one id per rollout; required by ``"group"`` and normalised ``"rtg"``.
        last: one value per rollout replacing s_K (``"delta"``, ``"end"``, ``"prefix"``;
            the released ``which_last_step="outcome"``).
        **options: passed to :func:`return_to_go` (``gamma``, ``normalize``...).

    >>> process_advantages([[0.0, 1.0]], "end").values.values.tolist()
    [-1.0, 0.0]
    """
    if options and estimator != "rtg":
        raise ConfigError(f"estimator {estimator!r} takes no options, got {sorted(options)}")
    if last is not None and estimator not in ("delta", "end", "prefix"):
        raise ConfigError(f"estimator {estimator!r} has no s_K to replace with `last`")
    if estimator == "delta":
        return delta_norm(scores, last=last)
    if estimator == "end":
        return end_norm(scores, last=last)
    if estimator == "prefix":
        return released_prefix(scores, last=last)
    if estimator == "group":
        if group_ids is None:
            raise ConfigError("the 'group' estimator needs group_ids")
        return group_norm(scores, group_ids)
    if estimator == "rtg":
        return return_to_go(scores, group_ids=group_ids, **options)
    raise unknown_name("process estimator", estimator, get_args(ProcessEstimator))
