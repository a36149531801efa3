"""Map raw judge scores to rewards in [0, 1]: the released linear map, or a fitted one.

A calibrator takes scores on the template's scale (integers, or logprob-weighted values
between them) and returns values in [0, 1]; NaN (unscored) stays NaN. The reward
pipeline applies one to every score before computing advantages.

- :class:`LinearCalibrator`: ``(N - low) / (high - low)``, i.e. (N - 1) / 4, as released;
- :class:`PlattCalibrator`: ``sigmoid(a * x + b)`` of that linear value ``x`` (Platt, 1999);
- :class:`IsotonicCalibrator`: a non-decreasing curve through fitted knots (PAV);
- :class:`TemperatureCalibrator`: the expected linear value under the score-token
  distribution sharpened or flattened by ``1 / t`` (needs logprobs).

The fitted ones turn a judge's score into a probability that the rollout (outcome) or
the step (process) is right. Fit them with :func:`fit_calibrator` on labelled data
(``python -m exprl_rewards.audit`` does, on one split, and reports on another), save
them as a small JSON file that records what they were fitted on, and load them with
:func:`load_calibrator` (``python -m exprl_rewards.score --calibration FILE``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import ConfigError, InputError

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "IsotonicCalibrator",
    "LinearCalibrator",
    "PlattCalibrator",
    "SavedCalibrator",
    "TemperatureCalibrator",
    "fit_calibrator",
    "fit_isotonic",
    "fit_platt",
    "fit_temperature",
    "load_calibrator",
    "probs_matrix",
]

FloatArray = npt.NDArray[np.float64]
Kind = Literal["linear", "platt", "isotonic", "temperature"]
CALIBRATORS: tuple[Kind, ...] = ("linear", "platt", "isotonic", "temperature")
FORMAT_VERSION = 1


@runtime_checkable
class Calibrator(Protocol):
    """Maps raw scores on a ``low``-``high`` scale to [0, 1]; NaN stays NaN.

    ``probs``, when given, is an ``(n, high - low + 1)`` array of the judge's
    probabilities for each score (NaN rows where it gave none); only calibrators that
    need it read it.
    """

    def __call__(
        self, scores: FloatArray, *, low: int, high: int, probs: FloatArray | None = None
    ) -> FloatArray:
        """Return the calibrated values, same shape as ``scores``."""
        ...


def probs_matrix(rows: Sequence[Sequence[float] | None], levels: int) -> FloatArray:
    """Stack per-score probabilities into the ``probs`` argument: NaN rows where None.

    >>> probs_matrix([(0.5, 0.5), None], 2).tolist()
    [[0.5, 0.5], [nan, nan]]
    """
    nan_row = (math.nan,) * levels
    return np.array([row or nan_row for row in rows], dtype=np.float64).reshape(len(rows), levels)


def _linear(scores: FloatArray, low: int, high: int) -> FloatArray:
    result: FloatArray = (np.asarray(scores, dtype=np.float64) - low) / (high - low)
    return result


@dataclass(frozen=True)
class SavedCalibrator:
    """The built-in calibrators' base: a ``meta`` record, and saving as JSON."""

    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, kw_only=True)

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(
        self, scores: FloatArray, *, low: int, high: int, probs: FloatArray | None = None
    ) -> FloatArray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        kind = _KIND_OF[type(self)]
        return {"format": FORMAT_VERSION, "kind": kind, **self.params(), "meta": dict(self.meta)}

    def save(self, path: str | Path) -> None:
        """Write the calibrator and its ``meta`` (what it was fitted on) as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class LinearCalibrator(SavedCalibrator):
    """The released mapping: ``(score - low) / (high - low)``.

    >>> LinearCalibrator()(np.array([1.0, 3.0, np.nan, 5.0]), low=1, high=5).tolist()
    [0.0, 0.5, nan, 1.0]
    """

    def params(self) -> dict[str, Any]:
        return {}

    def __call__(
        self, scores: FloatArray, *, low: int, high: int, probs: FloatArray | None = None
    ) -> FloatArray:
        return _linear(scores, low, high)


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic
    return out


@dataclass(frozen=True)
class PlattCalibrator(SavedCalibrator):
    """``sigmoid(a * x + b)`` where ``x = (score - low) / (high - low)``.

    >>> PlattCalibrator(a=4.0, b=-2.0)(np.array([3.0, np.nan]), low=1, high=5).tolist()
    [0.5, nan]
    """

    a: float
    b: float

    def params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}

    def __call__(
        self, scores: FloatArray, *, low: int, high: int, probs: FloatArray | None = None
    ) -> FloatArray:
        return _sigmoid(self.a * _linear(scores, low, high) + self.b)


@dataclass(frozen=True)
class IsotonicCalibrator(SavedCalibrator):
    """A non-decreasing map through knots ``(x, y)``, linear between them, flat outside.

    ``x`` is the linear value ``(score - low) / (high - low)``.

    >>> IsotonicCalibrator(x=(0.0, 1.0), y=(0.2, 0.8))(np.array([3.0]), low=1, high=5).tolist()
    [0.5]
    """

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or not self.x:
            raise ConfigError("isotonic calibrator needs as many y knots as x knots, at least one")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)) or any(
            b < a for a, b in zip(self.y, self.y[1:], strict=False)
        ):
            raise ConfigError("isotonic calibrator knots must be non-decreasing")

    def params(self) -> dict[str, Any]:
        return {"x": list(self.x), "y": list(self.y)}

    def __call__(
        self, scores: FloatArray, *, low: int, high: int, probs: FloatArray | None = None
    ) -> FloatArray:
        x = _linear(scores, low, high)
        out: FloatArray = np.interp(x, self.x, self.y)
        out[np.isnan(x)] = np.nan
        return out


def _tempered(probs: FloatArray, t: float) -> FloatArray:
    """Expected linear value under ``p ** (1 / t)``, renormalised; NaN rows stay NaN."""
    k = probs.shape[1]
    with np.errstate(divide="ignore"):
        logits = np.log(probs) / t
    logits -= np.max(logits, axis=1, keepdims=True)
    weights = np.exp(logits)
    levels = np.arange(k, dtype=np.float64) / (k - 1)
    out: FloatArray = weights @ levels / weights.sum(axis=1)
    return out


@dataclass(frozen=True)
class TemperatureCalibrator(SavedCalibrator):
    """Temperature scaling of the score-token distribution.

    The judge's probabilities ``p_k`` for the scores become ``p_k ** (1 / t)``,
    renormalised, and the result is the expected linear value under them. ``t < 1``
    sharpens towards the most likely score, ``t > 1`` flattens towards the middle.
    Scores without a distribution (no logprobs) get the linear value.

    >>> probs = np.array([[0.0, 0.0, 0.0, 0.6, 0.2]])
    >>> TemperatureCalibrator(t=1.0)(np.array([4.25]), low=1, high=5, probs=probs).round(4).tolist()
    [0.8125]
    """

    t: float

    def __post_init__(self) -> None:
        if not self.t > 0:
            raise ConfigError(f"temperature must be positive, got {self.t}")

    def params(self) -> dict[str, Any]:
        return {"t": self.t}

    def __call__(
        self, scores: FloatArray, *, low: int, high: int, probs: FloatArray | None = None
    ) -> FloatArray:
        out: FloatArray = _linear(scores, low, high).copy()
        if probs is None:
            return out
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (out.shape[0], high - low + 1):
            raise ConfigError(
                f"probs must have shape ({out.shape[0]}, {high - low + 1}), got {probs.shape}"
            )
        has = ~np.isnan(probs).any(axis=1) & (probs.sum(axis=1) > 0) & ~np.isnan(out)
        if has.any():
            out[has] = _tempered(probs[has], self.t)
        return out


_KIND_OF: dict[type, Kind] = {
    LinearCalibrator: "linear",
    PlattCalibrator: "platt",
    IsotonicCalibrator: "isotonic",
    TemperatureCalibrator: "temperature",
}


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


def load_calibrator(path: str | Path) -> SavedCalibrator:
    """Read a calibrator saved with ``save()``; errors name the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read calibrator: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: a calibrator file holds a JSON object")
    if data.get("format") != FORMAT_VERSION:
        raise InputError(
            f"{path}: field 'format': expected {FORMAT_VERSION}, got {data.get('format')!r}"
        )
    kind, meta = data.get("kind"), data.get("meta") or {}
    try:
        if kind == "linear":
            return LinearCalibrator(meta=meta)
        if kind == "platt":
            return PlattCalibrator(a=float(data["a"]), b=float(data["b"]), meta=meta)
        if kind == "isotonic":
            return IsotonicCalibrator(
                x=tuple(map(float, data["x"])), y=tuple(map(float, data["y"])), meta=meta
            )
        if kind == "temperature":
            return TemperatureCalibrator(t=float(data["t"]), meta=meta)
    except KeyError as e:
        raise InputError(f"{path}: field {e.args[0]!r} is missing for a {kind} calibrator") from e
    except (TypeError, ValueError, ConfigError) as e:
        raise InputError(f"{path}: bad {kind} calibrator: {e}") from e
    raise InputError(f"{path}: field 'kind': unknown calibrator {kind!r}")
