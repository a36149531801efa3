"""How good a judge is, measured against labels: numpy only, NaN-aware.

Every function takes calibrated probabilities ``p`` (or raw scores) and 0/1 labels
``y``; pairs where either is NaN (an unscored sample, an unlabelled one) are left out,
and the caller reports how many were. :func:`bootstrap` puts a percentile confidence
interval on any of them, resampling whole groups (a question's rollouts, a trace's
steps) when given group ids, since those are not independent.

>>> y = np.array([0, 0, 1, 1])
>>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), y)
0.75
>>> brier(np.array([0.0, 0.0, 1.0, 1.0]), y)
0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Estimate",
    "auroc",
    "bootstrap",
    "brier",
    "classification",
    "cohen_kappa",
    "ece",
    "first_below",
    "pass_at_k",
    "processbench",
    "reliability_bins",
    "rogan_gladen",
    "spearman",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    """A figure with its bootstrap percentile interval (NaN when undefined)."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if np.isnan(self.value):
            return "n/a"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict[str, float | None]:
        def clean(x: float) -> float | None:
            return None if np.isnan(x) else round(float(x), 6)

        return {"value": clean(self.value), "low": clean(self.low), "high": clean(self.high)}


def _pairs(p: Any, y: Any) -> tuple[FloatArray, FloatArray]:
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(p) & ~np.isnan(y)
    return p[keep], y[keep]


def brier(p: Any, y: Any) -> float:
    """Mean squared error of the probabilities."""
    p, y = _pairs(p, y)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def ece(p: Any, y: Any, *, bins: int = 10, adaptive: bool = False) -> float:
    """Expected calibration error: the sample-weighted mean |accuracy - confidence| per bin.

    Equal-width bins over [0, 1], or with ``adaptive`` equal-mass bins (each holds
    about the same number of samples; ties stay together).

    >>> round(ece(np.array([0.2, 0.2, 0.2, 0.2, 0.2]), np.array([1, 0, 0, 0, 0])), 6)
    0.0
    """
    p, y = _pairs(p, y)
    if not p.size:
        return float("nan")
    if adaptive:
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
        index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    else:
        index = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(index):
        m = index == b
        total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / p.size)


def reliability_bins(p: Any, y: Any, *, bins: int = 10) -> list[dict[str, float]]:
    """A reliability diagram's points: per non-empty bin of ``p`` (equal width on
    [0, 1]), the mean score, the fraction right, the count and a 95% Wilson interval, so
    that a point resting on 2 units is drawn and read as the guess it is.

    >>> [(b["n"], round(b["right"], 2)) for b in reliability_bins([0.1, 0.15, 0.9], [0, 1, 1])]
    [(2.0, 0.5), (1.0, 1.0)]
    """
    pp, yy = _pairs(p, y)
    index = np.clip(np.digitize(pp, np.linspace(0, 1, bins + 1)) - 1, 0, bins - 1)
    points = []
    for b in range(bins):
        m = index == b
        n = int(m.sum())
        if not n:
            continue
        k = float(yy[m].sum())
        z = 1.96
        centre = (k + z * z / 2) / (n + z * z)
        half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
        points.append({"score": float(pp[m].mean()), "right": k / n, "n": float(n),
                       "low": centre - half, "high": centre + half})  # fmt: skip
    return points


def auroc(s: Any, y: Any) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties 1/2."""
    s, y = _pairs(s, y)
    pos, neg = int(y.sum()), int((1 - y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size)
    sorted_s = s[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def classification(p: Any, y: Any, *, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, TPR, FPR and the predicted pass rate at a threshold."""
    p, y = _pairs(p, y)
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    tpr = float(pred[pos].mean()) if pos.any() else float("nan")
    tnr = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return {
        "accuracy": float((pred == pos).mean()) if p.size else float("nan"),
        "balanced_accuracy": (tpr + tnr) / 2,
        "tpr": tpr,
        "fpr": 1 - tnr,
        "pass_rate": float(pred.mean()) if p.size else float("nan"),
        "label_rate": float(pos.mean()) if p.size else float("nan"),
    }


def cohen_kappa(pred: Any, y: Any) -> float:
    """Agreement of 0/1 predictions with 0/1 labels beyond chance."""
    a, b = _pairs(pred, y)
    if not a.size:
        return float("nan")
    observed = float(np.mean(a == b))
    chance = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return (observed - chance) / (1 - chance) if chance < 1 else float("nan")


def rogan_gladen(observed: float, tpr: float, fpr: float) -> float:
    """The true pass rate from a judge's observed pass rate and its error rates.

    ``(observed - fpr) / (tpr - fpr)``, clipped to [0, 1]; NaN when the judge does no
    better than chance (``tpr <= fpr``).

    >>> rogan_gladen(0.5, tpr=0.9, fpr=0.1)
    0.5
    """
    if not tpr > fpr:
        return float("nan")
    return float(np.clip((observed - fpr) / (tpr - fpr), 0.0, 1.0))


def spearman(a: Any, b: Any) -> float:
    """Rank correlation of two samples (average ranks for ties); NaN pairs left out."""
    a, b = _pairs(a, b)
    if a.size < 3:
        return float("nan")

    def ranks(x: FloatArray) -> FloatArray:
        order = np.argsort(x, kind="mergesort")
        _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
        r = np.empty(x.size)
        r[order] = np.repeat(first + (counts - 1) / 2.0, counts)
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def first_below(step_scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scored below ``threshold``, or -1 (ProcessBench's "none").

    An unscored (NaN) step never counts as an error.

    >>> first_below([0.9, 0.7, 0.2, 0.1], 0.5), first_below([0.9, float("nan")], 0.5)
    (2, -1)
    """
    for i, s in enumerate(step_scores):
        if s < threshold:
            return i
    return -1


def processbench(predicted: Any, labels: Any) -> dict[str, float]:
    """ProcessBench's metric from predicted and labelled first-error indices (-1: none).

    Accuracy on the erroneous traces (the exact first error found), on the correct ones
    (no error claimed), and their harmonic mean, the "F1" the benchmark ranks by.
    """
    pred = np.asarray(predicted, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    wrong, right = lab >= 0, lab < 0
    acc_err = float((pred[wrong] == lab[wrong]).mean()) if wrong.any() else float("nan")
    acc_ok = float((pred[right] == -1).mean()) if right.any() else float("nan")
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok > 0 else 0.0
    return {"error_accuracy": acc_err, "correct_accuracy": acc_ok, "f1": f1}


def bootstrap(
    statistic: Callable[..., float],
    *arrays: Any,
    groups: Any = None,
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``statistic(*arrays)`` with a percentile bootstrap interval.

    Resamples rows (or, with ``groups``, whole groups of rows) with replacement ``n``
    times; resamples where the statistic is NaN (one class missing) are left out.

    >>> x = np.arange(100.0)
    >>> e = bootstrap(lambda a: float(a.mean()), x, n=200)
    >>> e.value, e.low < 49.5 < e.high
    (49.5, True)
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    size = len(arrays[0])
    value = float(statistic(*arrays))
    if size == 0:
        return Estimate(value, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(size)]
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    samples = []
    for _ in range(n):
        pick = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[i] for i in pick])
        stat = float(statistic(*(a[index] for a in arrays)))
        if not np.isnan(stat):
            samples.append(stat)
    if not samples:
        return Estimate(value, float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)``.

    (Chen et al. 2021, computed as a product to stay exact for large ``n``.)

    >>> pass_at_k(4, 1, 2)
    0.5
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
