"""Calibrators on synthetic data with known answers, and their files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exprl_rewards.errors import ConfigError, InputError
from exprl_rewards.rewards.calibration import (
    IsotonicCalibrator,
    LinearCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    load_calibrator,
)
from exprl_rewards.rewards.fitting import fit_calibrator, fit_isotonic, fit_platt, fit_temperature
from exprl_rewards.rewards.metrics import ece


def isotonic_oracle(y: list[float]) -> list[float]:
    """The min-max formula for isotonic regression: f_i = max_{j<=i} min_{k>=i} mean(y[j..k])."""
    n = len(y)
    return [
        max(min(float(np.mean(y[j : k + 1])) for k in range(i, n)) for j in range(i + 1))
        for i in range(n)
    ]


@given(st.lists(st.integers(0, 1), min_size=1, max_size=12))
def test_isotonic_matches_the_min_max_formula(labels: list[int]) -> None:
    x = np.arange(len(labels), dtype=np.float64)
    xs, ys = fit_isotonic(x, labels)
    assert list(xs) == x.tolist()
    assert np.allclose(ys, isotonic_oracle([float(v) for v in labels]))


@settings(max_examples=50)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1)), min_size=2, max_size=40),
    st.lists(st.floats(0, 1), min_size=7, max_size=7),
)
def test_isotonic_is_monotone_and_beats_any_monotone_rival(
    pairs: list[tuple[int, int]], rival: list[float]
) -> None:
    x = np.array([p[0] for p in pairs], dtype=np.float64)
    y = np.array([p[1] for p in pairs], dtype=np.float64)
    xs, ys = fit_isotonic(x, y)
    assert all(b >= a for a, b in itertools.pairwise(ys))
    fitted = np.interp(x, xs, ys)
    levels = np.maximum.accumulate(np.array(rival))  # any non-decreasing step function
    assert np.sum((fitted - y) ** 2) <= np.sum((levels[x.astype(int)] - y) ** 2) + 1e-9


def test_isotonic_known_answer_and_ties_pooled() -> None:
    xs, ys = fit_isotonic(np.array([1.0, 2.0, 3.0, 4.0]), [1, 0, 1, 1])
    assert ys == (0.5, 0.5, 1.0, 1.0)
    xs, ys = fit_isotonic(np.array([1.0, 1.0, 2.0]), [1, 0, 1])
    assert xs == (1.0, 2.0)
    assert ys == (0.5, 1.0)


def test_platt_recovers_known_parameters() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 20000)
    y = (rng.uniform(size=x.size) < 1 / (1 + np.exp(-(6 * x - 3)))).astype(float)
    a, b = fit_platt(x, y)
    assert a == pytest.approx(6, abs=0.35)
    assert b == pytest.approx(-3, abs=0.2)


def test_platt_stays_finite_on_separable_data() -> None:
    a, b = fit_platt(np.array([0.0, 0.0, 1.0, 1.0]), [0, 0, 1, 1])
    assert math.isfinite(a)
    assert math.isfinite(b)
    assert a > 0


def test_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (8000, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    sharp = TemperatureCalibrator(t=0.5)(np.zeros(len(probs)), low=1, high=5, probs=probs)
    y = (rng.uniform(size=len(probs)) < sharp).astype(float)
    assert fit_temperature(probs, y) == pytest.approx(0.5, abs=0.08)


def test_temperature_falls_back_to_linear_without_logprobs() -> None:
    probs = np.array([[np.nan] * 5, [0.0, 0.0, 0.0, 0.0, 0.9]])
    out = TemperatureCalibrator(t=2.0)(np.array([2.0, 5.0]), low=1, high=5, probs=probs)
    assert out.tolist() == [0.25, 1.0]
    with pytest.raises(ConfigError, match="shape"):
        TemperatureCalibrator(t=2.0)(np.array([2.0]), low=1, high=5, probs=probs)


def test_ece_of_a_calibrated_sample_is_near_zero_and_of_a_shifted_one_is_not() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, 100_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    assert ece(p, y) < 0.01
    assert ece(p, y, adaptive=True) < 0.01
    assert ece(np.clip(p + 0.2, 0, 1), y) > 0.15


@pytest.mark.parametrize("kind", ["linear", "platt", "isotonic", "temperature"])
def test_fitted_calibrators_round_trip_and_keep_nan(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(1, 6, 200).astype(float)
    probs = rng.dirichlet(np.ones(5), 200)
    labels = (rng.uniform(size=200) < (scores - 1) / 4).astype(float)
    cal = fit_calibrator(
        kind,
        scores,
        labels,
        low=1,
        high=5,
        probs=probs,
        meta={"data": "synthetic"},  # type: ignore[arg-type]
    )
    cal.save(tmp_path / "c.json")
    loaded = load_calibrator(tmp_path / "c.json")
    assert loaded == cal
    assert loaded.meta == {"data": "synthetic"}
    x = np.array([1.0, 3.0, np.nan, 5.0])
    pr = np.vstack([probs[:2], np.full(5, np.nan), probs[3:4]])
    out = loaded(x, low=1, high=5, probs=pr)
    assert np.isnan(out[2])
    assert np.all((out[[0, 1, 3]] >= 0) & (out[[0, 1, 3]] <= 1))
    assert out[0] <= out[1] <= out[3] or kind == "temperature"


def test_fit_ignores_unscored_and_unlabelled_samples() -> None:
    cal = fit_calibrator(
        "isotonic", np.array([1.0, np.nan, 5.0, 5.0]), [0, 1, np.nan, 1], low=1, high=5
    )
    assert isinstance(cal, IsotonicCalibrator)
    assert cal.x == (0.0, 1.0)
    assert cal.y == (0.0, 1.0)


def test_bad_fits_and_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="0 or 1"):
        fit_platt(np.array([0.5]), [2])
    with pytest.raises(ConfigError, match="no scored, labelled"):
        fit_platt(np.array([np.nan]), [1])
    with pytest.raises(ConfigError, match="needs score-token logprobs"):
        fit_calibrator("temperature", np.array([1.0]), [1], low=1, high=5)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 1, "kind": "platt", "a": 1.0}))
    with pytest.raises(InputError, match=r"bad\.json: field 'b' is missing"):
        load_calibrator(bad)
    bad.write_text(json.dumps({"format": 1, "kind": "isotonic", "x": [0, 1], "y": [1, 0]}))
    with pytest.raises(InputError, match="non-decreasing"):
        load_calibrator(bad)
    bad.write_text(json.dumps({"format": 1, "kind": "magic"}))
    with pytest.raises(InputError, match="field 'kind': unknown calibrator 'magic'"):
        load_calibrator(bad)
    bad.write_text("{")
    with pytest.raises(InputError, match="cannot read calibrator"):
        load_calibrator(bad)


def test_linear_and_platt_values() -> None:
    assert LinearCalibrator()(np.array([2.0]), low=1, high=5).tolist() == [0.25]
    out = PlattCalibrator(a=0.0, b=0.0)(np.array([1.0, 5.0]), low=1, high=5)
    assert out.tolist() == [0.5, 0.5]


# The released _score_normalization, written out (METHOD.md): N -> reward, None: unscored.
RELEASED_NORM = {
    "smooth": lambda n: (n - 1) / 4,
    "extreme_only": lambda n: {1: 0.0, 5: 1.0}.get(n),
    "extreme_only_clipped": lambda n: 0.0 if n <= 3 else 1.0,
    "semi_smooth": lambda n: {1: 0.0, 4: 0.8, 5: 1.0}.get(n),
}


@pytest.mark.parametrize("strategy", sorted(RELEASED_NORM))
def test_norm_strategies_match_the_released_table(strategy: str, tmp_path) -> None:
    from exprl_rewards.rewards.calibration import NormStrategyCalibrator

    c = NormStrategyCalibrator(strategy)  # type: ignore[arg-type]
    got = c(np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan]), low=1, high=5)
    want = [RELEASED_NORM[strategy](n) for n in (1, 2, 3, 4, 5)]
    assert [None if math.isnan(x) else x for x in got[:5]] == want
    assert math.isnan(got[5])
    fractional = c(np.array([4.25]), low=1, high=5)[0]
    assert (fractional == 0.8125) if strategy == "smooth" else math.isnan(fractional)
    c.save(tmp_path / "c.json")
    assert load_calibrator(tmp_path / "c.json") == c


def test_norm_strategy_errors() -> None:
    from exprl_rewards.rewards.calibration import NormStrategyCalibrator

    with pytest.raises(ConfigError, match="unknown norm_strategy 'extreme'; known: smooth"):
        NormStrategyCalibrator("extreme")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="1-5 scale"):
        NormStrategyCalibrator("semi_smooth")(np.array([3.0]), low=0, high=10)
