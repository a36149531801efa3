"""Advantages: differential tests against plain loops, and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from exprl_rewards import (
    ConfigError,
    InputError,
    Ragged,
    outcome_advantages,
    process_advantages,
    return_to_go,
)

NAN = math.nan
score = st.one_of(st.floats(0, 1), st.floats(-3, 3), st.just(NAN))
scored = st.floats(-3, 3)


# Plain-loop references -------------------------------------------------------------


def ref_outcome(
    scores: list[float], groups: list[int], estimator: str, std: str, singleton: str
) -> list[float]:
    out = []
    for s, g in zip(scores, groups, strict=True):
        if math.isnan(s):
            out.append(NAN)
            continue
        members = [x for x, h in zip(scores, groups, strict=True) if h == g and not math.isnan(x)]
        n = len(members)
        if n == 1:
            out.append({"zero": 0.0, "raw": s, "nan": NAN}[singleton])
            continue
        mean = sum(members) / n
        if estimator == "grpo":
            var = sum((x - mean) ** 2 for x in members) / (n - 1 if std == "sample" else n)
            out.append((s - mean) / (math.sqrt(var) + 1e-6))
        elif estimator == "drgrpo":
            out.append(s - mean)
        else:
            out.append(s - (sum(members) - s) / (n - 1))
    return out


def ref_process(
    rows: list[list[float]], groups: list[int], estimator: str, gamma: float = 1.0
) -> list[list[float]]:
    valid = [bool(r) and not any(math.isnan(x) for x in r) for r in rows]
    out = []
    for i, r in enumerate(rows):
        k = len(r)
        if not valid[i]:
            out.append([NAN] * k)
            continue
        if estimator == "delta":
            a = [r[0]] if k == 1 else [r[0] - r[-1]] + [r[j] - r[j - 1] for j in range(1, k)]
        elif estimator == "end":
            a = [x - r[-1] for x in r]
        elif estimator == "prefix":
            a = [r[0]] + [r[j] - r[j - 1] + r[-1] for j in range(1, k)]
        elif estimator == "group":
            pool = [
                x for j, row in enumerate(rows) if groups[j] == groups[i] and valid[j] for x in row
            ]
            a = [x - sum(pool) / len(pool) for x in r]
        else:  # rtg
            inc = [r[0]] + [r[j] - r[j - 1] for j in range(1, k)]
            a = [sum(gamma ** (m - j) * inc[m] for m in range(j, k)) for j in range(k)]
        out.append(a)
    return out


def same(a: np.ndarray, b: list[float]) -> bool:
    return bool(np.allclose(a, np.array(b, dtype=float), atol=1e-9, equal_nan=True))


# Outcome ---------------------------------------------------------------------------

batches = st.integers(1, 24).flatmap(
    lambda n: st.tuples(
        st.lists(score, min_size=n, max_size=n), st.lists(st.integers(0, 4), min_size=n, max_size=n)
    )
)


@given(
    batch=batches,
    estimator=st.sampled_from(["grpo", "drgrpo", "rloo"]),
    std=st.sampled_from(["sample", "population"]),
    singleton=st.sampled_from(["zero", "raw", "nan"]),
)
def test_outcome_matches_plain_loop(batch, estimator, std, singleton) -> None:  # type: ignore[no-untyped-def]
    scores, groups = batch
    adv = outcome_advantages(scores, groups, estimator=estimator, std=std, singleton=singleton)
    expected = ref_outcome(scores, groups, estimator, std, singleton)
    assert same(adv.values, expected)
    assert adv.mask.tolist() == [not math.isnan(x) for x in expected]
    assert adv.values.shape == (len(scores),)


@given(batch=batches, estimator=st.sampled_from(["grpo", "drgrpo", "rloo"]), shift=st.floats(-5, 5))
def test_outcome_group_mean_is_zero_and_shift_invariant(batch, estimator, shift) -> None:  # type: ignore[no-untyped-def]
    scores, groups = batch
    adv = outcome_advantages(scores, groups, estimator=estimator)
    g, v = np.array(groups), adv.values
    for group in set(groups):
        members = v[(g == group) & adv.mask]
        if members.size > 1:
            assert abs(members.sum()) < 1e-6
    shifted = outcome_advantages([s + shift for s in scores], groups, estimator=estimator)
    assert np.allclose(shifted.values, v, atol=1e-6, equal_nan=True)


def test_unscored_rollouts_are_left_out_not_folded_in_as_zero() -> None:
    ours = outcome_advantages([1.0, 0.5, NAN], ["q", "q", "q"], estimator="drgrpo")
    assert ours.values[:2].tolist() == [0.25, -0.25]
    assert math.isnan(ours.values[2])
    assert ours.mask.tolist() == [True, True, False]
    released = outcome_advantages([1.0, 0.5, 0.0], ["q", "q", "q"], estimator="drgrpo")
    assert released.values[1] == 0.0  # the released defect: 0.5 looks average, not below it


def test_singleton_groups_are_explicit() -> None:
    kw = {"group_ids": ["a", "b", "b"], "estimator": "grpo"}
    assert outcome_advantages([0.7, 1.0, NAN], singleton="zero", **kw).values[0] == 0.0  # type: ignore[arg-type]
    assert outcome_advantages([0.7, 1.0, NAN], singleton="raw", **kw).values[:2].tolist() == [
        0.7,
        1.0,
    ]  # type: ignore[arg-type]
    nan = outcome_advantages([0.7, 1.0, NAN], singleton="nan", **kw)  # type: ignore[arg-type]
    assert not nan.mask.any()
    assert np.isnan(nan.values).all()


def test_grpo_sample_and_population_std_differ_as_documented() -> None:
    sample = outcome_advantages([1.0, 0.0], [0, 0], std="sample").values
    population = outcome_advantages([1.0, 0.0], [0, 0], std="population").values
    assert np.allclose(sample, [0.5 / (math.sqrt(0.5) + 1e-6), -0.5 / (math.sqrt(0.5) + 1e-6)])
    assert np.allclose(population, [0.5 / (0.5 + 1e-6), -0.5 / (0.5 + 1e-6)])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: outcome_advantages([1.0, 2.0], [0]), InputError, "one group id per item"),
        (lambda: outcome_advantages([math.inf], [0]), InputError, "use NaN for an unscored"),
        (lambda: outcome_advantages([[1.0]], [0]), InputError, "must be 1-D"),
        (
            lambda: outcome_advantages([1.0], [0], estimator="ppo"),
            ConfigError,
            "known: grpo, drgrpo, rloo",
        ),
        (lambda: outcome_advantages([1.0], [0], std="robust"), ConfigError, "std must be"),
        (lambda: outcome_advantages([1.0], [0], singleton="one"), ConfigError, "singleton must be"),
        (
            lambda: process_advantages([[1.0]], "td"),
            ConfigError,
            "known: delta, end, group, prefix, rtg",
        ),
        (lambda: process_advantages([[1.0]], "group"), ConfigError, "needs group_ids"),
        (lambda: process_advantages([[1.0]], "delta", gamma=0.5), ConfigError, "takes no options"),
        (lambda: return_to_go([[1.0]], gamma=0.0), ConfigError, "gamma must be in"),
        (lambda: return_to_go([[1.0]], normalize=True), ConfigError, "needs group_ids"),
        (lambda: process_advantages([[1.0, math.inf]]), InputError, "use NaN"),
    ],
)
def test_bad_arguments_raise_clear_errors(call: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]


# Process ---------------------------------------------------------------------------

process_batches = st.integers(1, 10).flatmap(
    lambda n: st.tuples(
        st.lists(st.lists(score, max_size=6), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


@given(
    batch=process_batches,
    estimator=st.sampled_from(["delta", "end", "group", "prefix", "rtg"]),
    gamma=st.sampled_from([1.0, 0.9, 0.5]),
)
def test_process_matches_plain_loop(batch, estimator, gamma) -> None:  # type: ignore[no-untyped-def]
    rows, groups = batch
    options = {"gamma": gamma} if estimator == "rtg" else {}
    adv = process_advantages(
        rows, estimator, group_ids=groups if estimator == "group" else None, **options
    )  # type: ignore[arg-type]
    expected = ref_process(rows, groups, estimator, gamma)
    assert adv.values.lengths.tolist() == [len(r) for r in rows]
    for got, want in zip(adv.values.rows(), expected, strict=True):
        assert same(got, want)
    assert adv.mask.tolist() == [bool(r) and not any(math.isnan(x) for x in r) for r in rows]


@given(rows=st.lists(st.lists(scored, min_size=2, max_size=8), min_size=1, max_size=8))
def test_deltanorm_sums_to_zero_and_rtg_telescopes(rows: list[list[float]]) -> None:
    delta = process_advantages(rows, "delta")
    rtg = process_advantages(rows, "rtg")
    for r, d, g in zip(rows, delta.values.rows(), rtg.values.rows(), strict=True):
        assert abs(d.sum()) < 1e-9
        assert np.allclose(g, [r[-1]] + [r[-1] - r[k - 1] for k in range(1, len(r))])


@given(
    rows=st.lists(st.lists(scored, min_size=2, max_size=6), min_size=1, max_size=6),
    shift=st.floats(-2, 2),
    estimator=st.sampled_from(["delta", "end", "group"]),
)
def test_process_shift_invariance(rows: list[list[float]], shift: float, estimator: str) -> None:
    groups = [0] * len(rows)
    a = process_advantages(rows, estimator, group_ids=groups if estimator == "group" else None)  # type: ignore[arg-type]
    b = process_advantages(
        [[x + shift for x in r] for r in rows],
        estimator,
        group_ids=groups if estimator == "group" else None,
    )  # type: ignore[arg-type]
    assert np.allclose(a.values.values, b.values.values, atol=1e-9)


@given(batch=process_batches)
def test_an_unscored_trajectory_changes_nothing_else(batch) -> None:  # type: ignore[no-untyped-def]
    rows, groups = batch
    assume(any(r and not any(math.isnan(x) for x in r) for r in rows))
    keep = [i for i, r in enumerate(rows) if r and not any(math.isnan(x) for x in r)]
    full = process_advantages(rows, "group", group_ids=groups)
    only = process_advantages([rows[i] for i in keep], "group", group_ids=[groups[i] for i in keep])
    full_rows = full.values.rows()
    for j, i in enumerate(keep):
        assert np.allclose(full_rows[i], only.values.rows()[j])
    for i in set(range(len(rows))) - set(keep):
        assert not full.mask[i]
        assert np.isnan(full_rows[i]).all()


def test_released_settings_by_hand() -> None:
    rows = [[0.25, 0.5, 1.0], [0.5], [0.0, NAN], []]
    delta = process_advantages(rows, "delta")
    assert delta.values.rows()[0].tolist() == [-0.75, 0.25, 0.5]
    assert delta.values.rows()[1].tolist() == [0.5]  # K = 1 gives s_1
    assert delta.mask.tolist() == [True, True, False, False]  # unscored and empty rows masked
    assert process_advantages(rows, "prefix").values.rows()[0].tolist() == [0.25, 1.25, 1.5]
    normalized = return_to_go(rows, group_ids=[0, 0, 0, 0], normalize=True)
    # Increments of the two scored rows: [0.25, 0.25, 0.5] and [0.5]: mean 0.375.
    inc = np.array([0.25, 0.25, 0.5, 0.5])
    z = (inc - inc.mean()) / (inc.std(ddof=1) + 1e-6)
    assert np.allclose(normalized.values.rows()[0], [z[0] + z[1] + z[2], z[1] + z[2], z[2]])
    assert np.allclose(normalized.values.rows()[1], [z[3]])


def test_ragged_input_and_empty_batch() -> None:
    ragged = Ragged(np.array([0.0, 1.0, 0.5]), np.array([2, 1]))
    assert process_advantages(ragged, "end").values.values.tolist() == [-1.0, 0.0, 0.0]
    empty = process_advantages([], "delta")
    assert len(empty.values) == 0
    assert empty.mask.shape == (0,)
    nothing = process_advantages([[], []], "rtg")
    assert nothing.mask.tolist() == [False, False]


def test_last_replaces_s_k_as_the_released_which_last_step_outcome() -> None:
    rows = [[0.25, 0.5, 0.75], [0.5, 1.0], [0.75]]
    outcome = [1.0, 0.0, 0.0]
    got = process_advantages(rows, "delta", last=outcome).values.rows()
    # written out: r_1 = s_1 - outcome, r_k = s_k - s_{k-1}; K = 1 keeps s_1 (as released)
    want = [[0.25 - 1.0, 0.25, 0.25], [0.5 - 0.0, 0.5], [0.75]]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w)
    end = process_advantages(rows, "end", last=outcome).values.rows()
    np.testing.assert_allclose(end[0], [0.25 - 1, 0.5 - 1, 0.75 - 1])
    masked = process_advantages(rows, "delta", last=[1.0, np.nan, 0.0])
    assert masked.mask.tolist() == [True, False, True]
    with pytest.raises(ConfigError, match="no s_K"):
        process_advantages(rows, "rtg", last=outcome)
    with pytest.raises(InputError, match="one value per rollout"):
        process_advantages(rows, "delta", last=[1.0])
