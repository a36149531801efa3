"""Stage II's answer checker and pass@k, on real references (no engine)."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exprl_rewards.rewards.metrics import pass_at_k
from exprl_rewards.text.answers import check_answer, extract_answer, gold_answer

DATA = Path(__file__).resolve().parents[1] / "data" / "references"

GSM8K = [
    ("so she makes \\boxed{18} dollars", "18", 1.0),
    ("The answer is \\boxed{1,800}.", "1800", 1.0),
    ("\\boxed{\\$18}", "18", 1.0),
    ("\\boxed{18 \\text{ dollars}}", "18", 1.0),
    ("9 * 2 = 18\n#### 18", "18", 1.0),
    ("\\boxed{17} wait no \\boxed{18}", "18", 1.0),  # the last box counts
    ("\\boxed{18} wait no \\boxed{17}", "18", 0.0),
    ("\\boxed{18.0}", "18", 1.0),
    ("\\boxed{18x}", "18", 0.0),
    ("she makes 18 dollars", "18", 0.0),  # no final-answer marker: 0
    ("\\boxed{18", "18", 0.0),  # unclosed box
    ("\\boxed{-3}", "-3", 1.0),
]


@pytest.mark.parametrize(("response", "gold", "want"), GSM8K)
def test_gsm8k_answers(response, gold, want):
    assert check_answer(response, gold, "gsm8k") == want


MATH = [
    ("so \\boxed{\\frac{1}{2}}", "\\frac12", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
    ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", 1.0),
    ("\\boxed{3}", "\\frac{1}{2}", 0.0),
]


@pytest.mark.parametrize(("response", "gold", "want"), MATH)
def test_math_answers_symbolically(response, gold, want):
    pytest.importorskip("math_verify")
    assert check_answer(response, gold, "math500") == want


def test_math_checking_works_off_the_main_thread():
    """math-verify's default timeouts use signal.alarm and fail in threads; ours are off."""
    pytest.importorskip("math_verify")
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda r: check_answer(r[0], r[1], "math500"), MATH))
    assert got == [w for _, _, w in MATH]


def test_nested_braces_and_missing_answers():
    assert extract_answer("x \\boxed{\\frac{a}{b^{2}}} y") == "\\frac{a}{b^{2}}"
    assert extract_answer("no answer here") is None
    assert check_answer("\\boxed{" + "1" * 500 + "}", "1", "gsm8k") == 0.0


def test_every_real_gsm8k_reference_checks_against_its_own_gold():
    with (DATA / "gsm8k_test.jsonl").open() as f:
        rows = [json.loads(line) for line in f]
    golds = [gold_answer(r["answer"], "gsm8k") for r in rows]
    assert all(
        check_answer(r["answer"], g, "gsm8k") == 1.0 for r, g in zip(rows, golds, strict=False)
    )
    assert check_answer(rows[0]["answer"], golds[1], "gsm8k") == 0.0


def test_real_math500_solutions_check_against_their_answer_field():
    pytest.importorskip("math_verify")
    with (DATA / "math500_test.jsonl").open() as f:
        rows = [json.loads(line) for line in f][:80]
    ok = [check_answer(r["solution"], r["answer"], "math500") for r in rows]
    assert sum(ok) / len(ok) >= 0.95, [r["answer"] for r, v in zip(rows, ok, strict=False) if not v]


@given(st.integers(1, 10).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(0, n), st.integers(1, n))))  # fmt: skip
def test_pass_at_k_equals_the_share_of_k_subsets_with_a_success(nck):
    n, c, k = nck
    subsets = list(combinations([1] * c + [0] * (n - c), k))
    want = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
