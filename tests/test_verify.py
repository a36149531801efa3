"""The numpy verification: its ground truth, its checks, and its command line."""

from __future__ import annotations

import numpy as np
import pytest

from exprl_rewards import verify as v


@pytest.fixture(scope="module")
def problem() -> v.ToyProblem:
    return v.ToyProblem(vocab=2, segments=3, tokens_per_segment=1, noise=0.2, seed=3)


def test_exact_gradient_matches_finite_differences(problem: v.ToyProblem) -> None:
    values = problem.scores[:, -1]
    grad = problem.exact_gradient(problem.theta, values)
    rng = np.random.default_rng(0)
    for _ in range(5):
        d = rng.normal(size=problem.theta.shape)
        h = 1e-5
        fd = (
            problem.objective(problem.theta + h * d, values)
            - problem.objective(problem.theta - h * d, values)
        ) / (2 * h)
        assert np.isclose(fd, (grad * d).sum(), rtol=1e-6, atol=1e-10)


def test_sequence_probabilities_sum_to_one(problem: v.ToyProblem) -> None:
    assert np.isclose(problem.seq_probs(problem.theta).sum(), 1.0)
    assert problem.scores.shape == (8, 3)
    assert ((problem.scores >= 0) & (problem.scores <= 1)).all()


def test_documented_claims_hold_and_a_biased_estimator_is_caught(problem: v.ToyProblem) -> None:
    rows, _ = v.verify(problem, group=4)
    by_name = {r.name: r for r in rows}
    assert all(r.ok for r in rows)
    assert by_name["outcome rloo"].rel_bias < 1e-10
    assert by_name["process rtg gamma=1"].rel_bias < 1e-10
    assert np.isclose(by_name["outcome drgrpo"].scale, 3 / 4)
    # EndNorm charges every segment -s_K: it does not point up the final score.
    assert by_name["process end"].cos_final < 0.5
    # A spec that claims unbiasedness for a biased estimator must fail the check.
    fake = v.Spec("fake", "unbiased", v._process("delta"))
    probs = problem.seq_probs(problem.theta)
    update = v.exact_update(problem, fake, 3, probs)
    grad = problem.exact_gradient(problem.theta, problem.scores[:, -1])
    assert np.linalg.norm(update - grad) / np.linalg.norm(grad) > 0.1


def test_monte_carlo_converges_to_exact(problem: v.ToyProblem) -> None:
    spec = next(s for s in v.estimators(3) if s.name == "outcome rloo")
    exact = v.exact_update(problem, spec, 3, problem.seq_probs(problem.theta))
    rng = np.random.default_rng(1)
    errors = [
        np.linalg.norm(v.sampled_update(problem, spec, 3, n, rng) - exact) / np.linalg.norm(exact)
        for n in (100, 20000)
    ]
    assert errors[1] < errors[0] / 3


def test_command_line_prints_the_table_and_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code = v.main(
        ["--segments", "2", "--tokens-per-segment", "2", "--group", "3", "--samples", "200,20000"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "process delta (released)" in out
    assert "PASSED" in out
    assert out.count(" ok") == 3


def test_segment_scores_grade_each_step_alone() -> None:
    """A hand-built case: the released judge sees one step and the reference, so a step
    after a mistake can still be right; a prefix judge counts the rollout so far."""
    prefix = v.ToyProblem(2, 2, 2, 0.0, 0, "prefix")
    segment = v.ToyProblem(2, 2, 2, 0.0, 0, "segment")
    ref = prefix.reference
    assert (segment.reference == ref).all()
    index = {tuple(s): i for i, s in enumerate(prefix.seqs)}
    right = index[tuple(ref)]
    slip = index[(1 - ref[0], *ref[1:])]  # one wrong token in the first step
    late = index[(*ref[:3], 1 - ref[3])]  # one wrong token in the last step
    assert segment.scores[right].tolist() == [1.0, 1.0]
    assert segment.scores[slip].tolist() == [0.5, 1.0]  # the second step, alone, is right
    assert prefix.scores[slip].tolist() == [0.25, 0.75]  # the rollout so far
    assert segment.scores[late].tolist() == [1.0, 0.5]
    assert segment.correct[right] == 1.0
    assert segment.correct[slip] == segment.correct[late] == 0.0


def test_which_estimator_follows_the_goal_depends_on_the_score_semantics() -> None:
    """The robust findings of `verify --seeds 6` (docs/concepts.md), on three seeds: with
    segment scores DeltaNorm and GroupNorm point toward solving (P[right]) on every seed,
    and outcome / return-to-go, which chase the last step alone, do not; with prefix
    scores return-to-go does better than DeltaNorm."""
    cos: dict[tuple[str, str], list[float]] = {}
    for semantics in ("prefix", "segment"):
        for seed in range(3):
            rows, _ = v.verify(v.ToyProblem(2, 3, 2, 0.1, seed, semantics), 3)
            assert all(r.ok for r in rows)
            for r in rows:
                cos.setdefault((semantics, r.name), []).append(r.cos_correct)
    for name in ("process delta (released)", "process group"):
        assert min(cos["segment", name]) > 0
        assert np.mean(cos["segment", name]) > np.mean(cos["segment", "outcome rloo"]) + 0.2
    assert np.mean(cos["segment", "process rtg gamma=1"]) < 0.1
    assert np.mean(cos["prefix", "process rtg gamma=1"]) > np.mean(
        cos["prefix", "process delta (released)"]
    )
