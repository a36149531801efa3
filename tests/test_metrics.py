"""Audit metrics against brute-force definitions and known values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exprl_rewards.rewards import metrics


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 1)), min_size=2, max_size=30))
def test_auroc_is_the_pairwise_win_rate(pairs: list[tuple[int, int]]) -> None:
    s = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    if not pos.size or not neg.size:
        assert np.isnan(metrics.auroc(s, y))
        return
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    assert metrics.auroc(s, y) == pytest.approx(wins / (pos.size * neg.size))


def test_nan_pairs_are_left_out() -> None:
    s = np.array([0.1, np.nan, 0.9, 0.3])
    y = np.array([0, 1, 1, np.nan])
    assert metrics.auroc(s, y) == 1.0
    assert metrics.brier(s, y) == pytest.approx((0.01 + 0.01) / 2)


def test_classification_kappa_and_rogan_gladen() -> None:
    p = np.array([0.9, 0.8, 0.2, 0.6, 0.1, 0.4])
    y = np.array([1, 1, 1, 0, 0, 0])
    c = metrics.classification(p, y, threshold=0.5)
    assert c["tpr"] == pytest.approx(2 / 3)
    assert c["fpr"] == pytest.approx(1 / 3)
    assert c["accuracy"] == pytest.approx(4 / 6)
    assert c["balanced_accuracy"] == pytest.approx(2 / 3)
    assert metrics.cohen_kappa(y, y) == 1.0
    assert metrics.cohen_kappa(p >= 0.5, y) == pytest.approx(1 / 3)
    # A judge with TPR 0.8 and FPR 0.3 on a population whose pass rate is 0.4 observes
    # 0.8 * 0.4 + 0.3 * 0.6 = 0.5; the correction gives back 0.4.
    assert metrics.rogan_gladen(0.5, tpr=0.8, fpr=0.3) == pytest.approx(0.4)
    assert np.isnan(metrics.rogan_gladen(0.5, tpr=0.3, fpr=0.3))


def test_processbench_metric() -> None:
    predicted = [2, -1, 1, -1, 3]
    labels = [2, 1, 1, -1, -1]
    out = metrics.processbench(predicted, labels)
    assert out["error_accuracy"] == pytest.approx(2 / 3)
    assert out["correct_accuracy"] == pytest.approx(1 / 2)
    assert out["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_spearman() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert metrics.spearman(a, a**3) == pytest.approx(1.0)
    assert metrics.spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(metrics.spearman(a, np.ones(5)))


def test_bootstrap_resamples_groups_and_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, 400)
    est = metrics.bootstrap(lambda a: float(a.mean()), x, n=500)
    assert est.low < 0.3 < est.high
    assert est.low < est.value < est.high
    # Perfectly correlated pairs: resampling rows understates the spread of the mean;
    # resampling the groups does not.
    groups = np.repeat(np.arange(200), 2)
    paired = np.repeat(rng.normal(0, 1, 200), 2)
    by_row = metrics.bootstrap(lambda a: float(a.mean()), paired, n=500)
    by_group = metrics.bootstrap(lambda a: float(a.mean()), paired, groups=groups, n=500)
    assert by_group.high - by_group.low > 1.2 * (by_row.high - by_row.low)
    assert str(metrics.Estimate(float("nan"), 0, 0)) == "n/a"


def test_reliability_bins_count_their_units_and_widen_when_few() -> None:
    from exprl_rewards.rewards.metrics import reliability_bins

    p = [0.05] * 2 + [0.95] * 40
    y = [1, 0] + [1] * 36 + [0] * 4
    low, high = reliability_bins(p, y)
    assert (low["n"], high["n"]) == (2, 40)
    assert low["right"] == 0.5
    assert high["right"] == pytest.approx(0.9)
    # two units say little: the interval spans most of [0, 1]; forty say more
    assert low["high"] - low["low"] > 0.7
    assert high["high"] - high["low"] < 0.25
    assert low["low"] < low["right"] < low["high"]
    assert reliability_bins([float("nan"), 0.5], [1, float("nan")]) == []
