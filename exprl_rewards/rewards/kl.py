"""Per-token KL estimators between the policy and the reference (base) policy.

With ``logp`` the policy's and ``ref_logp`` the reference's log-probabilities of the
sampled tokens (so samples come from the policy), the three estimators of
KL(policy || reference) from John Schulman's "Approximating KL Divergence" note are:

- ``k1``: ``logp - ref_logp``. Unbiased, high variance, can be negative.
- ``k2``: ``0.5 * (logp - ref_logp) ** 2``. Biased, low variance, non-negative.
- ``k3``: ``exp(ref_logp - logp) - (ref_logp - logp) - 1``. Unbiased and non-negative:
  the "low-variance" estimator ExpRL uses as a loss term (coefficient 0.001). As in the
  released code (verl's ``low_var_kl``), the log-ratio is clamped to [-20, 20] before
  ``exp`` and the result to [-10, 10], so one wild token cannot blow up the loss.

These are plain numpy functions for verification and for trainers without a KL term
of their own; they do not take gradients.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, InputError

__all__ = ["kl_penalty"]

KLKind = Literal["k1", "k2", "k3"]


def kl_penalty(
    logp: npt.ArrayLike,
    ref_logp: npt.ArrayLike,
    kind: KLKind = "k3",
    *,
    clamp: float | None = 10.0,
) -> npt.NDArray[np.float64]:
    """Elementwise KL estimate for each sampled token.

    Args:
        logp: log-probabilities of the sampled tokens under the policy.
        ref_logp: log-probabilities of the same tokens under the reference policy.
        kind: ``"k1"``, ``"k2"`` or ``"k3"`` (default, as released).
        clamp: for ``k3``, clamp the result to ``[-clamp, clamp]`` (released: 10);
            None disables it. Ignored by ``k1`` and ``k2``.

    Returns:
        An array of the broadcast shape of the inputs.

    >>> kl_penalty([-1.0, -2.0], [-1.0, -1.0]).round(4).tolist()
    [0.0, 0.7183]
    """
    lp = np.asarray(logp, dtype=np.float64)
    ref = np.asarray(ref_logp, dtype=np.float64)
    try:
        log_ratio = lp - ref
    except ValueError as e:
        raise InputError(f"logp {lp.shape} and ref_logp {ref.shape} do not broadcast") from e
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        back = np.clip(-log_ratio, -20.0, 20.0)
        kl = np.exp(back) - back - 1.0
        return kl if clamp is None else np.clip(kl, -clamp, clamp)
    raise ConfigError(f"unknown KL estimator {kind!r}; known: k1, k2, k3")
