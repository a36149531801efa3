"""Map raw judge scores to rewards in [0, 1].

A calibrator takes scores on the template's scale (integers, or logprob-weighted values
between them) and returns values in [0, 1]; NaN (unscored) stays NaN. The reward
pipeline applies one to every score before computing advantages.

:class:`LinearCalibrator` is the released ExpRL mapping, (N - low) / (high - low), i.e.
(N - 1) / 4 on the 1-5 scale. Fitted calibrators (Platt, isotonic) come with the
calibration audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Calibrator", "LinearCalibrator"]

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class Calibrator(Protocol):
    """Maps raw scores on a ``low``-``high`` scale to [0, 1]; NaN stays NaN."""

    def __call__(self, scores: FloatArray, *, low: int, high: int) -> FloatArray:
        """Return the calibrated values, same shape as ``scores``."""
        ...


@dataclass(frozen=True)
class LinearCalibrator:
    """The released mapping: ``(score - low) / (high - low)``.

    >>> LinearCalibrator()(np.array([1.0, 3.0, np.nan, 5.0]), low=1, high=5).tolist()
    [0.0, 0.5, nan, 1.0]
    """

    def __call__(self, scores: FloatArray, *, low: int, high: int) -> FloatArray:
        result: FloatArray = (np.asarray(scores, dtype=np.float64) - low) / (high - low)
        return result
