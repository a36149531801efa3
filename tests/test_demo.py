"""The numpy testbed: its parts against plain computations, and its robust findings."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from exprl_rewards.demo.race import QUICK, run
from exprl_rewards.demo.report import interval
from exprl_rewards.demo.rewards import METHODS, reward
from exprl_rewards.demo.world import JudgeSim, Policy, World

TINY = replace(QUICK, prompts=8, steps=12, stage_one=6, eval_samples=8)


def sampled(seed: int = 0, prompts: int = 24, group: int = 8, repairs: bool = False):
    world = World(prompts, seed=seed, repairs=repairs)
    policy = Policy(world, world.initial_logits())
    return world, policy, policy.sample(group, np.random.default_rng(seed))


def test_rollouts_follow_the_reference_rules():
    world, _, r = sampled()
    valid = np.arange(world.max_len) < r.length[..., None]
    stops = (r.tokens == world.eos) & valid
    assert (stops.sum(axis=-1) <= 1).all()  # at most one EOS, and it ends the rollout
    assert ((r.length == world.max_len) | stops.any(axis=-1)).all()
    for p, g in np.ndindex(r.length.shape):  # matched = tokens equal to the reference
        toks, ref = r.tokens[p, g, : r.length[p, g]], world.reference[p, : r.length[p, g]]
        first_miss = np.flatnonzero(toks != ref)
        want = first_miss[0] if first_miss.size else len(toks)
        assert r.matched[p, g] == min(want, world.lengths[p] + 1)


@pytest.mark.parametrize("repairs", [False, True])
def test_exact_solve_probability_matches_sampling(repairs):
    world = World(6, seed=3, p0=(0.05, 0.5), repairs=repairs)
    policy = Policy(world, world.initial_logits())
    r = policy.sample(20_000, np.random.default_rng(1))
    freq = (r.matched == world.lengths[:, None] + 1).mean(axis=1)
    p = policy.solve_probability()
    np.testing.assert_allclose(p, world.p0, rtol=1e-9)  # the base model solves with p0
    assert (np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 20_000) + 1e-4).all(), (freq, p)


@pytest.mark.parametrize("repairs", [False, True])
def test_update_is_the_exact_gradient_of_the_weighted_log_likelihood(repairs):
    world, policy, r = sampled(prompts=3, group=4, repairs=repairs)
    adv = np.random.default_rng(2).normal(size=r.tokens.shape)

    def objective(theta: np.ndarray) -> float:
        logp = np.log(Policy(world, theta).probs())
        valid = np.arange(world.max_len) < r.length[..., None]
        p = np.indices(r.tokens.shape)[0]
        terms = logp[p, r.row, r.on_path.astype(int), r.tokens] * adv
        return float((terms * valid).sum() / r.tokens.shape[1])

    theta = policy.theta.copy()
    policy.apply(r, adv, lr=1.0)
    step = policy.theta - theta
    rng = np.random.default_rng(5)
    for _ in range(5):  # directional derivatives by central differences
        d = rng.normal(size=theta.shape)
        fd = (objective(theta + 1e-6 * d) - objective(theta - 1e-6 * d)) / 2e-6
        assert float((step * d).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_judge_scale_noise_free_order_and_the_quirk():
    rng = np.random.default_rng(0)
    q = np.linspace(0, 1, 101)
    none = np.zeros_like(q, dtype=bool)
    honest = JudgeSim(noise=0.0).score(q, np.zeros_like(q), none, rng)
    assert set(np.unique(honest)) == {0.0, 0.25, 0.5, 0.75, 1.0}  # (N - 1) / 4, as released
    assert (np.diff(honest) >= 0).all()
    exploitable = JudgeSim(noise=0.0, exploitable=True)
    assert (exploitable.score(q, np.zeros_like(q), ~none, rng) == 1.0).all()
    harsh = JudgeSim(noise=0.0, gamma=3.0).score(q, np.zeros_like(q), none, rng)
    assert (harsh <= honest).all()
    assert (harsh < honest).any()


def test_sparse_gives_no_signal_where_nothing_succeeds_and_dense_rewards_do():
    world, _, r = sampled(prompts=24)
    correct = (r.matched == world.lengths[:, None] + 1).any(axis=1)
    stuck = np.flatnonzero(~correct)
    assert stuck.size > 10  # the regime the paper is about: sparse rarely fires
    valid = np.arange(world.max_len) < r.length[..., None]
    judge, rng = JudgeSim(noise=0.0), np.random.default_rng(0)
    sparse = reward("sparse", world, r, judge, rng).advantages
    assert (sparse[stuck][valid[stuck]] == 0).all()
    for method in METHODS[1:]:
        adv = reward(method, world, r, judge, rng).advantages[stuck][valid[stuck]]
        assert np.abs(np.nan_to_num(adv)).max() > 0, method


def test_process_tokens_carry_their_steps_return_to_go():
    world, _, r = sampled(prompts=4, group=4)
    judge, rng = JudgeSim(noise=0.0), np.random.default_rng(0)
    adv = reward("process-rtg", world, r, judge, rng, step_tokens=2).advantages
    for p, g in np.ndindex(r.length.shape):
        n = r.length[p, g]
        ends = np.minimum(np.arange(2, n + 2, 2), n)
        q = np.minimum(r.matched[p, g], ends) / (world.lengths[p] + 1)
        s = (np.clip(np.rint(1 + 4 * q), 1, 5) - 1) / 4  # the noise-free judge, by hand
        want = s[-1] - np.concatenate([[0.0], s[:-1]])  # A_k = s_K - s_{k-1}
        np.testing.assert_allclose(adv[p, g, :n], np.repeat(want, 2)[:n])
        assert np.isnan(adv[p, g, n:]).all()


def test_runs_reproduce_from_their_seed_and_stage_two_is_sparse():
    judge = JudgeSim()
    a, b = run("outcome", judge, 1, TINY), run("outcome", judge, 1, TINY)
    for name in a.curves:
        np.testing.assert_array_equal(a.curves[name], b.curves[name])
    assert a.final == b.final
    c = run("outcome", judge, 2, TINY)
    assert not np.array_equal(a.curves["reward"], c.curves["reward"])
    sparse = run("sparse", judge, 1, TINY)
    # Stage II rewards are 0/1 means over 8 prompts x 8 rollouts
    tail = a.curves["reward"][TINY.stage_one :] * 64
    np.testing.assert_allclose(tail, np.rint(tail))
    assert sparse.curves["unlocked"][0] == a.curves["unlocked"][0]  # the same first sample


@pytest.mark.parametrize("repairs", [False, True])
def test_a_tuning_run_without_curves_ends_where_the_full_run_does(repairs):
    """Tuning skips the curves (exact solves, entropy, canaries); the policy it trains and
    its final figures must be the same, in both worlds and for every method."""
    cfg = replace(TINY, repairs=repairs)
    for method in METHODS:
        full = run(method, JudgeSim(), 3, cfg, lr=8.0)
        bare = run(method, JudgeSim(), 3, cfg, lr=8.0, record=False)
        assert bare.final == full.final, method
        assert not bare.curves["pass1"].any()  # nothing recorded
    assert full.curves["pass1"].any()


def test_interval_is_a_student_t_interval():
    mean, low, high = interval([0.2, 0.4, 0.3, 0.5])
    sd = np.std([0.2, 0.4, 0.3, 0.5], ddof=1)
    assert mean == pytest.approx(0.35)
    assert high - mean == pytest.approx(3.182 * sd / 2, abs=1e-4)
    assert low == pytest.approx(2 * mean - high, abs=1e-4)


def test_quick_demo_runs_without_torch_and_shows_the_robust_findings(tmp_path):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['demo', '--quick', '--seeds', '3', '--no-plot', '--no-progress',"
        f" '--out', {str(tmp_path)!r}]\n"
        "try:\n    runpy.run_module('exprl_rewards.demo', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # numpy only
    assert "## Race" in (tmp_path / "findings.md").read_text()
    got = json.loads((tmp_path / "results.json").read_text())
    race = got["race"]
    assert set(race) == set(METHODS)
    # dense credit unlocks more prompts than sparse when sparse rarely fires
    assert race["outcome"]["unlocked_stage1"][1] > race["sparse"]["unlocked_stage1"][2]
    # an exploitable judge: more rollouts carry the quirk, the reward is higher, pass@1 lower
    honest, hacked = race["outcome"], got["flaws"]["outcome, exploitable judge"]
    assert hacked["quirk_stage1"][0] > 2 * honest["quirk_stage1"][0]
    assert hacked["reward_stage1"][0] > honest["reward_stage1"][0]
    assert hacked["pass1_stage1"][0] < honest["pass1_stage1"][0]
    # the hack alarm: the exploitable judge's canaries fire in every seed, well before
    # Stage I's pass@1 peaks; the default judge raises no alarm
    assert hacked["alarm_seeds"][0] == 1.0
    assert hacked["alarm_step"][0] < hacked["pass1_peak_step"][0] - 10
    assert honest["alarm_seeds"][0] == 0.0
    assert "## The hack alarm" in (tmp_path / "findings.md").read_text()
    # the released semantics turn the ranking round: with a segment judge DeltaNorm and
    # GroupNorm beat sparse-only (paired), where with the prefix judge DeltaNorm does
    # not; return-to-go, which follows the last step's score, no longer beats sparse
    segment = got["segment"]
    for name in ("process-delta", "process-group"):
        assert segment[name]["pass1_vs_sparse"][1] > 0  # the paired interval's low end
    assert (
        race["process-delta"]["pass1_vs_sparse"][0] < segment["process-delta"]["pass1_vs_sparse"][1]
    )
    assert (
        segment["process-rtg"]["pass1_vs_sparse"][0]
        < segment["process-group"]["pass1_vs_sparse"][1]
    )
    # the repair world (irrelevant steps, mistakes that can be retracted) keeps the
    # guidance: with a segment judge DeltaNorm and GroupNorm beat sparse and return-to-go
    # does not; with a prefix judge return-to-go and GroupNorm beat sparse, and DeltaNorm
    # does better with a segment judge than with a prefix one
    repair = got["repair"]
    assert "## Race in the repair world" in (tmp_path / "findings.md").read_text()
    for judge, name in (("segment", "process-delta"), ("segment", "process-group"),
                        ("prefix", "process-rtg"), ("prefix", "process-group")):  # fmt: skip
        assert repair[judge][name]["pass1_vs_sparse"][1] > 0, (judge, name)
    seg_gain = {m: repair["segment"][m]["pass1_vs_sparse"] for m in METHODS}
    assert seg_gain["process-rtg"][0] < seg_gain["process-group"][1]
    assert repair["prefix"]["process-delta"]["pass1_vs_sparse"][0] < seg_gain["process-delta"][1]


def test_a_harsher_prefix_judge_on_mistakes_helps_deltanorm_and_starves_return_to_go():
    """Repair world, quick configuration, paired by seed: a prefix judge that scores a
    pending mistake as nothing (x0) gives DeltaNorm a step that goes down at the mistake
    and up at its repair; one blind to it (x1) gives return-to-go partial credit for
    progress made before the mistake. GroupNorm beats sparse-only under both."""
    cfg = replace(QUICK, repairs=True)

    def final(method: str, weight: float, lr: float, seed: int) -> float:
        judge = JudgeSim(pending_weight=weight)
        return run(method, judge, seed, cfg, lr=lr).final["pass1"]

    for seed in range(3):
        assert final("process-delta", 0.0, 2.0, seed) > final("process-delta", 1.0, 2.0, seed) + 0.2
        assert final("process-rtg", 1.0, 8.0, seed) > final("process-rtg", 0.0, 8.0, seed) + 0.2
        sparse = final("sparse", 0.5, 8.0, seed)
        for weight in (1.0, 0.0):
            assert final("process-group", weight, 8.0, seed) > sparse + 0.2, (seed, weight)


def test_the_mistakes_experiment_reports_every_weight():
    """The full run's "mistakes" experiment, on a configuration too small to learn: one
    row per method and weight (the default's 0.5 included), in findings and results."""
    from exprl_rewards.demo.__main__ import experiments, findings

    micro = replace(TINY, prompts=4, steps=4, stage_one=2, seeds=2,
                    lr_grid=(2.0,), tune_seeds=1, pending_weights=(1.0, 0.0))  # fmt: skip
    text, summary = findings(experiments(micro, progress=False), micro)
    assert "## A prefix judge's view of mistakes" in text
    assert list(summary["mistakes"]) == ["1.0", "0.5", "0.0"]
    for by in summary["mistakes"].values():
        assert set(by) == set(METHODS) - {"sparse"}
    rows = [line for line in text.splitlines() if ", pending mistake x" in line]
    assert len(rows) == 3 * (len(METHODS) - 1)
    json.dumps(summary)  # results.json can hold it
    quick_text, quick = findings(experiments(replace(micro, pending_weights=()), False), micro)
    assert "view of mistakes" not in quick_text
    assert list(quick["mistakes"]) == ["0.5"]


def test_the_alarm_watches_stage_one_without_changing_the_run():
    """The alarm fires in Stage I under the exploitable judge, never under the default
    one; Stage II (sparse rewards, no judge) grades no canary."""
    exploited = run("outcome", JudgeSim(exploitable=True), 1, TINY)
    assert exploited.curves["alarm"][: TINY.stage_one].any()
    assert not exploited.curves["canary"][TINY.stage_one :].any()
    honest = run("outcome", JudgeSim(), 1, TINY)
    assert not honest.curves["alarm"].any()
    assert honest.curves["canary"][: TINY.stage_one].max() <= 0.25


def test_a_segment_judge_grades_each_step_alone():
    """Hand-built: one wrong first token, then the rest of the reference and EOS. The
    segment judge sees each step alone: the later steps are right; the prefix judge
    sees no progress past the mistake."""
    from exprl_rewards.demo.rewards import _segments

    world = World(1, lengths=(4, 4), seed=0)
    ref = world.reference[0]
    tokens = np.full((1, 1, world.max_len), world.eos)
    tokens[0, 0, :4] = [(ref[0] + 1) % world.vocab, ref[1], ref[2], ref[3]]
    r = world.replay(tokens)
    assert (r.length.item(), r.matched.item()) == (5, 0)
    share, quirk, size = _segments(world, r, 2, 3)
    assert share[0, 0].tolist() == [0.5, 1.0, 1.0]  # the EOS in its place is right too
    assert size[0, 0].tolist() == [2, 2, 1]
    assert not quirk.any()
    judge = JudgeSim(noise=0.0, semantics="segment")
    got = reward("process-group", world, r, judge, np.random.default_rng(0))
    assert np.isfinite(got.rollout_reward).all()
    assert got.rollout_reward[0, 0] == 1.0  # the last step, alone, is right
    prefix = reward("process-group", world, r, JudgeSim(noise=0.0), np.random.default_rng(0))
    assert prefix.rollout_reward[0, 0] == 0.0  # no progress past the first token


def repair_world() -> World:
    world = World(1, lengths=(4, 4), seed=0, repairs=True)
    world.reference[0, :4] = [0, 1, 2, 3]
    return world


def test_repair_world_rules_on_a_hand_built_rollout():
    """A mistake, its retraction, an irrelevant step, then the rest: correct. The world's
    record: what is established, what is pending, what each token alone is worth."""
    from exprl_rewards.demo.rewards import _segments

    world = repair_world()
    f, x, e = world.filler, world.retract, world.eos
    tokens = np.full((1, 2, world.max_len), e)
    tokens[0, 0, :8] = [0, 2, x, 1, f, 2, 3, e]  # wrong 2 at k=1, retracted
    tokens[0, 1, :6] = [0, 2, 1, 2, 3, e]  # the same mistake, never retracted
    r = world.replay(tokens)
    assert r.length[0].tolist() == [8, 6]
    assert r.matched[0].tolist() == [5, 1]  # only the first is correct (L + 1 = 5)
    assert r.reached[0, 0, 1:9].tolist() == [1, 1, 1, 2, 2, 3, 4, 5]
    assert r.pending[0, 0, 1:9].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert r.row[0, 0, :8].tolist() == [0, 1, 1, 1, 2, 2, 3, 4]  # the policy sees k
    assert r.on_path[0, 0, :8].tolist() == [1, 1, 0, 1, 1, 1, 1, 1]
    assert r.credit[0, 0, :8].tolist() == [1, 0, 0.5, 1, 0.5, 1, 1, 1]
    # alone, the reference's next token reads as right even on top of a mistake; content
    # after it establishes nothing, and the wrong final answer leaves the mistake pending
    assert r.credit[0, 1, :6].tolist() == [1, 0, 1, 0, 0, 0]
    assert r.reached[0, 1, 6] == 1
    assert r.pending[0, 1, 6]
    share, _, _ = _segments(world, r, 2, 4)
    assert share[0, 0].tolist() == [0.5, 0.75, 0.75, 1.0]
    ends = np.array([[[2, 4, 6, 8], [2, 4, 6, 6]]])
    q = world.prefix_progress(r, ends)  # a pending mistake halves the prefix's worth
    np.testing.assert_allclose(q[0, 0], [0.1, 0.4, 0.6, 1.0])
    np.testing.assert_allclose(q[0, 1], [0.1, 0.1, 0.1, 0.1])
    judge = JudgeSim(noise=0.0)
    segment = replace(judge, semantics="segment")
    seg = reward("process-delta", world, r, segment, np.random.default_rng(0)).advantages
    pre = reward("process-delta", world, r, judge, np.random.default_rng(0)).advantages
    # DeltaNorm, noise-free (A_1 = s_1 - s_K, then s_k - s_{k-1}). Repaired: the step
    # holding the mistake is pushed down by both judges, the repair step up
    np.testing.assert_allclose(seg[0, 0, :8], np.repeat([-0.5, 0.25, 0.0, 0.25], 2))
    np.testing.assert_allclose(pre[0, 0, :8], np.repeat([-1.0, 0.5, 0.0, 0.5], 2))
    # never repaired: the segment judge credits the right-looking step after the
    # mistake and pushes the wrong answer down; the prefix judge sees no step differ
    np.testing.assert_allclose(seg[0, 1, :6], np.repeat([0.5, 0.0, -0.5], 2))
    np.testing.assert_allclose(pre[0, 1, :6], np.zeros(6))


def test_a_prefix_judges_pending_weight_sets_what_an_unretracted_mistake_costs():
    """The same two rollouts as above: a blind judge (x1) sees the unretracted mistake
    only as progress that stopped; a harsh one (x0) scores its prefixes as nothing. A
    retracted mistake costs the same under every weight once retracted."""
    world = repair_world()
    f, x, e = world.filler, world.retract, world.eos
    tokens = np.full((1, 2, world.max_len), e)
    tokens[0, 0, :8] = [0, 2, x, 1, f, 2, 3, e]
    tokens[0, 1, :6] = [0, 2, 1, 2, 3, e]
    r = world.replay(tokens)
    ends = np.array([[[2, 4, 6, 8], [2, 4, 6, 6]]])
    blind, harsh = (world.prefix_progress(r, ends, w) for w in (1.0, 0.0))
    np.testing.assert_allclose(blind[0, 0], [0.2, 0.4, 0.6, 1.0])
    np.testing.assert_allclose(harsh[0, 0], [0.0, 0.4, 0.6, 1.0])
    np.testing.assert_allclose(blind[0, 1], [0.2] * 4)
    np.testing.assert_allclose(harsh[0, 1], [0.0] * 4)
    outcome = {
        w: reward("outcome", world, r, judge, np.random.default_rng(0)).rollout_reward[0]
        for w in (1.0, 0.5, 0.0)
        for judge in [JudgeSim(noise=0.0, gamma=1.0, pending_weight=w)]
    }
    assert outcome[1.0][0] == outcome[0.5][0] == outcome[0.0][0] == 1.0  # correct
    assert outcome[1.0][1] > outcome[0.0][1] == 0.0  # the mistake pending at the EOS
    path = World(1, lengths=(4, 4), seed=0)  # no pending mistakes in the path world
    p = Policy(path, path.initial_logits()).sample(4, np.random.default_rng(0))
    upto = p.length[..., None]
    assert (path.prefix_progress(p, upto, 0.0) == path.prefix_progress(p, upto, 1.0)).all()


@pytest.mark.parametrize("repairs", [False, True])
def test_replaying_sampled_tokens_gives_the_sampled_record(repairs):
    world = World(12, seed=4, repairs=repairs, p0=(0.01, 0.3))
    r = Policy(world, world.initial_logits()).sample(16, np.random.default_rng(3))
    again = world.replay(r.tokens)
    for name in r.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(again, name), getattr(r, name), err_msg=name)
    if repairs:  # the base model takes detours and repairs some mistakes
        valid = np.arange(world.max_len) < r.length[..., None]
        assert ((r.tokens == world.filler) & valid).any()
        repaired = (r.tokens == world.retract) & ~r.on_path & valid
        correct = r.matched == world.lengths[:, None] + 1
        assert (repaired.any(axis=-1) & correct).any()
