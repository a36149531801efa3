"""Map raw judge scores to rewards in [0, 1]: the released linear map, or a fitted one.

A calibrator takes scores on the template's scale (integers, or logprob-weighted values
between them) and returns values in [0, 1]; NaN (unscored) stays NaN. The reward
pipeline applies one to every score before computing advantages.

- :class:`LinearCalibrator`: ``(N - low) / (high - low)``, i.e. (N - 1) / 4, as released;
- :class:`PlattCalibrator`: ``sigmoid(a * x + b)`` of that linear value ``x`` (Platt, 1999);
- :class:`IsotonicCalibrator`: a non-decreasing curve through fitted knots (PAV);
- :class:`TemperatureCalibrator`: the expected linear value under the score-token
  distribution sharpened or flattened by ``1 / t`` (needs logprobs);
- :class:`NormStrategyCalibrator`: the released code's ``norm_strategy`` options
  (``smooth``, ``extreme_only``, ``extreme_only_clipped``, ``semi_smooth``).

The fitted ones turn a judge's score into a probability that the rollout (outcome) or
the step (process) is right. Fit them with :func:`~exprl_rewards.rewards.fitting.fit_calibrator`
on labelled data
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

from ..errors import ConfigError, InputError

__all__ = [
    "CALIBRATORS",
    "NORM_STRATEGIES",
    "Calibrator",
    "IsotonicCalibrator",
    "LinearCalibrator",
    "NormStrategyCalibrator",
    "PlattCalibrator",
    "SavedCalibrator",
    "TemperatureCalibrator",
    "load_calibrator",
    "probs_matrix",
]

FloatArray = npt.NDArray[np.float64]
Kind = Literal["linear", "platt", "isotonic", "temperature", "norm_strategy"]
NormStrategy = Literal["smooth", "extreme_only", "extreme_only_clipped", "semi_smooth"]
CALIBRATORS: tuple[Kind, ...] = ("linear", "platt", "isotonic", "temperature")  # fitted
NORM_STRATEGIES: tuple[NormStrategy, ...] = (
    "smooth", "extreme_only", "extreme_only_clipped", "semi_smooth"
)  # fmt: skip
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


# The released ``_score_normalization``: score N (1-5) -> reward; NaN: unscored.
_STRATEGY_TABLE: dict[NormStrategy, tuple[float, ...]] = {
    "smooth": (0.0, 0.25, 0.5, 0.75, 1.0),
    "extreme_only": (0.0, math.nan, math.nan, math.nan, 1.0),
    "extreme_only_clipped": (0.0, 0.0, 0.0, 1.0, 1.0),
    "semi_smooth": (0.0, math.nan, math.nan, 0.8, 1.0),
}


@dataclass(frozen=True)
class NormStrategyCalibrator(SavedCalibrator):
    """The released code's ``norm_strategy``, on the 1-5 scale.

    ``smooth`` is (N - 1) / 4 (what the shipped scripts use; fractional scores welcome).
    The others are defined on the integer the judge wrote, so a fractional score (a
    logprob-weighted one) is unscored rather than rounded; use them with parsed scores
    (``top_logprobs=None``), as released:

    - ``extreme_only`` (the code's default): 1 -> 0, 5 -> 1, anything else unscored;
    - ``extreme_only_clipped``: N <= 3 -> 0, else 1;
    - ``semi_smooth``: 1 -> 0, 4 -> 0.8, 5 -> 1, anything else unscored.

    >>> c = NormStrategyCalibrator("semi_smooth")
    >>> c(np.array([1.0, 2.0, 4.0, 5.0, 4.5]), low=1, high=5).tolist()
    [0.0, nan, 0.8, 1.0, nan]
    """

    strategy: NormStrategy = "smooth"

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGY_TABLE:
            raise ConfigError(
                f"unknown norm_strategy {self.strategy!r}; known: {', '.join(NORM_STRATEGIES)}"
            )

    def params(self) -> dict[str, Any]:
        return {"strategy": self.strategy}

    def __call__(
        self, scores: FloatArray, *, low: int, high: int, probs: FloatArray | None = None
    ) -> FloatArray:
        if (low, high) != (1, 5):
            raise ConfigError(f"norm_strategy is defined on the 1-5 scale, got {low}-{high}")
        if self.strategy == "smooth":
            return _linear(scores, low, high)
        x = np.asarray(scores, dtype=np.float64)
        whole = np.isfinite(x) & (x == np.round(x)) & (x >= 1) & (x <= 5)
        table = np.array(_STRATEGY_TABLE[self.strategy])
        out: FloatArray = np.full(x.shape, np.nan)
        out[whole] = table[x[whole].astype(np.int64) - 1]
        return out


_KIND_OF: dict[type, Kind] = {
    NormStrategyCalibrator: "norm_strategy",
    LinearCalibrator: "linear",
    PlattCalibrator: "platt",
    IsotonicCalibrator: "isotonic",
    TemperatureCalibrator: "temperature",
}


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
            if not float(data["a"]) > 0:
                raise InputError(
                    f"{path}: field 'a': slope {data['a']} is not positive, so this calibrator"
                    " would rank a higher judge score as less likely right; refit it on more"
                    " labelled data (python -m exprl_rewards.audit)"
                )
            return PlattCalibrator(a=float(data["a"]), b=float(data["b"]), meta=meta)
        if kind == "isotonic":
            return IsotonicCalibrator(
                x=tuple(map(float, data["x"])), y=tuple(map(float, data["y"])), meta=meta
            )
        if kind == "temperature":
            return TemperatureCalibrator(t=float(data["t"]), meta=meta)
        if kind == "norm_strategy":
            return NormStrategyCalibrator(data["strategy"], meta=meta)
    except KeyError as e:
        raise InputError(f"{path}: field {e.args[0]!r} is missing for a {kind} calibrator") from e
    except (TypeError, ValueError, ConfigError) as e:
        raise InputError(f"{path}: bad {kind} calibrator: {e}") from e
    raise InputError(f"{path}: field 'kind': unknown calibrator {kind!r}")
