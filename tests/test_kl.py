"""KL estimators: exact expectations on small categorical distributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exprl_rewards import ConfigError, InputError, kl_penalty

dists = st.integers(2, 6).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.05, 1), min_size=n, max_size=n),
        st.lists(st.floats(0.05, 1), min_size=n, max_size=n),
    )
)


@given(dists)
def test_k1_and_k3_are_unbiased_and_k3_k2_nonnegative(pq: tuple[list[float], list[float]]) -> None:
    p = np.array(pq[0]) / sum(pq[0])
    q = np.array(pq[1]) / sum(pq[1])
    true_kl = float((p * np.log(p / q)).sum())
    logp, ref = np.log(p), np.log(q)
    # Expectations over samples from the policy p, computed exactly.
    assert np.isclose((p * kl_penalty(logp, ref, "k1")).sum(), true_kl)
    assert np.isclose((p * kl_penalty(logp, ref, "k3", clamp=None)).sum(), true_kl)
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert (kl_penalty(logp, ref, "k2") >= 0).all()


def test_k3_matches_the_released_formula_and_clamps() -> None:
    logp, ref = np.array([-0.5, -30.0, -1.0]), np.array([-1.5, -0.1, -1.0])
    k3 = kl_penalty(logp, ref)
    x = ref[0] - logp[0]
    assert np.isclose(k3[0], np.exp(x) - x - 1)
    assert k3[1] == 10.0  # exp(29.9) - 29.9 - 1 clamped, as released
    assert k3[2] == 0.0
    assert kl_penalty(logp, ref, "k3", clamp=None)[1] > 1e8
    assert kl_penalty([-1.0], [-2.0], "k2").tolist() == [0.5]


def test_bad_kind_and_shapes() -> None:
    with pytest.raises(ConfigError, match="known: k1, k2, k3"):
        kl_penalty([0.0], [0.0], "k4")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="do not broadcast"):
        kl_penalty([0.0, 1.0], [0.0, 1.0, 2.0])
