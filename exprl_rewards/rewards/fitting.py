"""Fit calibrators to labelled judge scores: Platt, isotonic (PAV), temperature.

:func:`fit_calibrator` takes raw scores on the judge's scale and 0/1 labels (the rollout
or step is right) and returns a :class:`~exprl_rewards.rewards.calibration.SavedCalibrator` that
records what it was fitted on. NaN scores (unscored) are left out of every fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError
from .calibration import (
    CALIBRATORS,
    FloatArray,
    IsotonicCalibrator,
    Kind,
    LinearCalibrator,
    PlattCalibrator,
    SavedCalibrator,
    TemperatureCalibrator,
    _linear,
    _sigmoid,
    _tempered,
)

__all__ = ["fit_calibrator", "fit_isotonic", "fit_platt", "fit_temperature"]


def _labelled(x: FloatArray, y: Any) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ConfigError(f"scores and labels must be 1-D and the same length: {x.shape} {y.shape}")
    keep = ~np.isnan(x) & ~np.isnan(y)
    if not keep.any():
        raise ConfigError("no scored, labelled sample to fit on")
    if not np.isin(y[keep], (0.0, 1.0)).all():
        raise ConfigError("labels must be 0 or 1")
    return x[keep], y[keep]


def fit_platt(x: FloatArray, y: Any, *, iterations: int = 100) -> tuple[float, float]:
    """Fit ``sigmoid(a * x + b)`` to 0/1 labels by Newton's method on the log loss.

    Uses Platt's smoothed targets, ``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)``, so a
    separable sample gives finite parameters. NaN scores or labels are ignored.
    """
    x, y = _labelled(x, y)
    pos = y.sum()
    neg = y.size - pos
    target = np.where(y == 1, (pos + 1) / (pos + 2), 1 / (neg + 2))
    a, b = 0.0, math.log((pos + 1) / (neg + 1))
    for _ in range(iterations):
        p = _sigmoid(a * x + b)
        w = np.maximum(p * (1 - p), 1e-12)
        g = np.array([np.sum((p - target) * x), np.sum(p - target)])
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(h + 1e-9 * np.eye(2), g)
        a, b = a - float(step[0]), b - float(step[1])
        if np.max(np.abs(step)) < 1e-10:
            break
    return a, b


def fit_isotonic(x: FloatArray, y: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The non-decreasing fit of ``y`` on ``x`` with least squared error (PAV).

    Equal ``x`` values are pooled first (a step function cannot give them different
    values). Returns the knots: each distinct ``x`` and its fitted value.
    """
    x, y = _labelled(x, y)
    xs, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=y)
    # Blocks of pooled levels: each holds (sum, weight, number of distinct x).
    block_sum: list[float] = []
    block_w: list[float] = []
    block_n: list[int] = []
    for s, w in zip(sums.tolist(), counts.tolist(), strict=True):
        block_sum.append(s)
        block_w.append(float(w))
        block_n.append(1)
        while len(block_sum) > 1 and block_sum[-2] / block_w[-2] > block_sum[-1] / block_w[-1]:
            s2, w2, n2 = block_sum.pop(), block_w.pop(), block_n.pop()
            block_sum[-1] += s2
            block_w[-1] += w2
            block_n[-1] += n2
    ys = np.repeat([s / w for s, w in zip(block_sum, block_w, strict=True)], block_n)
    return tuple(xs.tolist()), tuple(ys.tolist())


def fit_temperature(
    probs: FloatArray, y: Any, *, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature minimising the log loss of the tempered expected score.

    ``probs`` is ``(n, levels)``; rows with NaN or no mass, and NaN labels, are ignored.
    A golden-section search over log ``t`` within ``bounds``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(probs).any(axis=1) & (probs.sum(axis=1) > 0) & ~np.isnan(y)
    if not keep.any():
        raise ConfigError("temperature scaling needs score-token logprobs; none were given")
    probs, y = probs[keep], y[keep]

    def loss(log_t: float) -> float:
        p = np.clip(_tempered(probs, math.exp(log_t)), 1e-6, 1 - 1e-6)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    for _ in range(80):
        if loss(c) < loss(d):
            hi, d = d, c
            c = hi - ratio * (hi - lo)
        else:
            lo, c = c, d
            d = lo + ratio * (hi - lo)
    return math.exp((lo + hi) / 2)


def fit_calibrator(
    kind: Kind,
    scores: FloatArray,
    labels: Any,
    *,
    low: int,
    high: int,
    probs: FloatArray | None = None,
    meta: Mapping[str, Any] | None = None,
) -> SavedCalibrator:
    """Fit a calibrator of ``kind`` to raw ``scores`` and 0/1 ``labels``.

    Args:
        kind: ``"linear"`` (nothing to fit), ``"platt"``, ``"isotonic"`` or
            ``"temperature"`` (needs ``probs``).
        scores: raw scores on the ``low``-``high`` scale; NaN (unscored) are ignored.
        labels: 1 where the rollout or step is right, else 0.
        probs: ``(n, high - low + 1)`` score-token probabilities, for temperature.
        meta: what it was fitted on (data, split, judge...), saved with it.
    """
    info = dict(meta or {})
    x = _linear(np.asarray(scores, dtype=np.float64), low, high)
    if kind == "linear":
        return LinearCalibrator(meta=info)
    if kind == "platt":
        a, b = fit_platt(x, labels)
        return PlattCalibrator(a=a, b=b, meta=info)
    if kind == "isotonic":
        xs, ys = fit_isotonic(x, labels)
        return IsotonicCalibrator(x=xs, y=ys, meta=info)
    if kind == "temperature":
        if probs is None:
            raise ConfigError("temperature scaling needs score-token logprobs (probs)")
        return TemperatureCalibrator(t=fit_temperature(probs, labels), meta=info)
    raise ConfigError(f"unknown calibrator {kind!r}; expected one of {', '.join(CALIBRATORS)}")
