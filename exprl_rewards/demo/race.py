"""One training run of the testbed, and a race of methods over seeds.

A run is Stage I with the method's reward for ``stage_one`` steps, then Stage II with the
sparse reward up to ``steps``; the sparse-only run takes the same total number of
updates. Every step samples ``group`` rollouts of every prompt, turns them into
per-token advantages (:mod:`.rewards`) and takes one exact policy-gradient step.

Estimators differ in scale (GRPO divides by the group's std, DeltaNorm does not), so one
step size for all would rank step sizes, not estimators. :func:`tune` picks each method's
Stage I step size from a grid on separate tuning seeds, by final pass@1; Stage II always
takes sparse-only's best step size, so that the two stages compare like with like.

Curves (one value per step): the share of prompts *unlocked* (solved by at least one
training rollout so far), the method's own mean reward, the exact pass@1 and pass@k of
the policy after the step (mean over prompts of ``p`` and ``1 - (1 - p)^k``), the mean
entropy of the sampled tokens' next-token rows (what trainers log as ``entropy``), and
the share of rollouts holding the quirk token. Through Stage I a hack alarm
(:class:`~exprl_rewards.rewards.canaries.HackAlarm`) watches the judge: each step it also grades
canaries (a quirk token alone, nothing solved: 5% of the batch) and checks the answers;
``canary`` is their mean reward, ``alarm`` and ``alarm_divergence`` its two signals
(canaries at the honest mean; reward rising with no accuracy rise). At the end,
``eval_samples`` fresh rollouts per prompt give pass@1 and pass@k with the unbiased
estimator, the figure a real evaluation would report (the exact value sits beside it as a check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..rewards.canaries import HackAlarm
from ..rewards.metrics import pass_at_k
from .rewards import reward
from .world import FloatArray, JudgeSim, Policy, World

__all__ = ["CURVES", "QUICK", "DemoConfig", "RunResult", "evaluate", "run", "tune"]

CURVES = ("unlocked", "reward", "pass1", "passk", "entropy", "quirk", "canary", "alarm",
          "alarm_divergence")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The testbed's sizes and schedule.

    Args:
        prompts: prompts per world (one world per seed).
        group: rollouts per prompt per step (GRPO's group).
        steps: total updates; ``stage_one`` of them with the method's reward.
        lr: step size of the policy-gradient update on the logits.
        step_tokens: tokens per reasoning step (what the process judge grades).
        p0: range of the starting solve probability (log-uniform over prompts).
        k: the k of pass@k.
        eval_samples: rollouts per prompt in the final evaluation.
        seeds: how many seeds (worlds and sampling) per setting.
        lr_grid: the step sizes :func:`tune` tries.
        tune_seeds: seeds for tuning (numbered from 10,000: disjoint from the reported).
        repairs: the repair world (steps that can be repaired, irrelevant steps; see
            :class:`~.world.World`) instead of the path world.
        pending_weights: the prefix judges' ``pending_weight`` values that the demo's
            "mistakes" experiment tries besides the default.
    """

    prompts: int = 64
    group: int = 8
    steps: int = 160
    stage_one: int = 80
    lr: float = 0.5
    step_tokens: int = 2
    p0: tuple[float, float] = (1e-6, 0.05)
    k: int = 8
    eval_samples: int = 32
    seeds: int = 10
    lr_grid: tuple[float, ...] = (0.5, 2.0, 8.0, 32.0, 128.0)
    tune_seeds: int = 3
    repairs: bool = False
    pending_weights: tuple[float, ...] = (1.0, 0.0)


# The quick grid leaves out 32, which no setting of the quick (or the full) run picks
QUICK = DemoConfig(prompts=32, steps=80, stage_one=40, seeds=4, eval_samples=16, tune_seeds=2,
                   lr_grid=(0.5, 2.0, 8.0, 128.0), pending_weights=())  # fmt: skip
TUNE_SEED = 10_000


@dataclass
class RunResult:
    """Curves of one run (``[steps]`` each) and its final evaluation."""

    method: str
    seed: int
    curves: dict[str, FloatArray] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)


def _entropy(policy: Policy, states: tuple[np.ndarray, ...]) -> float:
    pi = policy.probs()[states]
    return float(-(pi * np.log(np.maximum(pi, 1e-300))).sum(axis=-1).mean())


@lru_cache(maxsize=32)
def _base_model(
    prompts: int, p0: tuple[float, float], seed: int, repairs: bool
) -> tuple[World, FloatArray]:
    """The world of ``seed`` and its base model, built once for all the runs that share
    them (a repair world's base model takes 80 exact solves to calibrate)."""
    world = World(prompts, p0=p0, seed=seed, repairs=repairs)
    theta = world.initial_logits()
    theta.flags.writeable = False  # shared: a policy's update makes a new array
    return world, theta


def run(
    method: str,
    judge: JudgeSim,
    seed: int,
    config: DemoConfig,
    *,
    lr: float | None = None,
    stage_two_lr: float | None = None,
    record: bool = True,
) -> RunResult:
    """Stage I with ``method``, Stage II sparse, from the world and sampling of ``seed``.

    ``lr`` (Stage I) and ``stage_two_lr`` default to ``config.lr``. ``record=False`` (for
    tuning) skips what only the curves need; the policy and the final figures are the same.
    """
    lrs = (config.lr if lr is None else lr, config.lr if stage_two_lr is None else stage_two_lr)
    world, theta = _base_model(config.prompts, config.p0, seed, config.repairs)
    policy = Policy(world, theta)
    rng = np.random.default_rng([seed, 1])
    judge_rng = np.random.default_rng([seed, 2])
    canary_rng = np.random.default_rng([seed, 3])  # its own stream: the run is unchanged
    alarm = HackAlarm()
    unlocked = np.zeros(world.prompts, dtype=bool)
    curves = {name: np.zeros(config.steps) for name in CURVES}
    for step in range(config.steps):
        stage = method if step < config.stage_one else "sparse"
        rollouts = policy.sample(config.group, rng)
        correct = rollouts.matched == world.lengths[:, None] + 1
        if record:  # the entropy of the rows the policy sampled from, before the update
            valid = np.arange(world.max_len) < rollouts.length[..., None]
            p = np.indices(valid.shape)[0]
            states = (p[valid], rollouts.row[valid], rollouts.on_path[valid].astype(np.int64))
            curves["entropy"][step] = _entropy(policy, states)
        got = reward(stage, world, rollouts, judge, judge_rng, step_tokens=config.step_tokens)
        policy.apply(rollouts, got.advantages, lrs[step >= config.stage_one])
        if not record:
            continue
        unlocked |= correct.any(axis=1)
        solve = policy.solve_probability()
        curves["unlocked"][step] = unlocked.mean()
        curves["reward"][step] = got.rollout_reward.mean()
        curves["pass1"][step] = solve.mean()
        curves["passk"][step] = (1 - (1 - solve) ** config.k).mean()
        curves["quirk"][step] = (rollouts.quirk_at < rollouts.length).mean()
        if step < config.stage_one and stage != "sparse":
            n = max(1, round(0.05 * correct.size))  # a quirk token, then EOS: no progress
            canary = judge.score(np.zeros(n), np.full(n, 2 / world.max_len),
                                 np.ones(n, dtype=bool), canary_rng)  # fmt: skip
            hack = alarm.update(step, got.rollout_reward.ravel().tolist(), canary.tolist(),
                                correct.ravel().tolist())  # fmt: skip
            curves["canary"][step] = canary.mean()
            curves["alarm"][step] = hack["hack/alarm_canary"]
            curves["alarm_divergence"][step] = hack["hack/alarm_divergence"]
    return RunResult(method, seed, curves, evaluate(policy, config, rng))


def evaluate(policy: Policy, config: DemoConfig, rng: np.random.Generator) -> dict[str, float]:
    """pass@1 and pass@k from fresh samples (unbiased estimator), and the exact values."""
    world, n = policy.world, config.eval_samples
    rollouts = policy.sample(n, rng)
    correct = (rollouts.matched == world.lengths[:, None] + 1).sum(axis=1)
    solve = policy.solve_probability()
    return {
        "pass1": float(np.mean([pass_at_k(n, int(c), 1) for c in correct])),
        "passk": float(np.mean([pass_at_k(n, int(c), config.k) for c in correct])),
        "pass1_exact": float(solve.mean()),
        "passk_exact": float((1 - (1 - solve) ** config.k).mean()),
    }


def tune(
    methods: Sequence[str],
    judge: JudgeSim,
    config: DemoConfig,
    *,
    done: Callable[[], None],
    sparse_lr: float | None = None,
) -> dict[str, float]:
    """Each method's Stage I step size: the grid's best mean final pass@1 on tuning seeds.

    Sparse-only is tuned first, unless ``sparse_lr`` gives its step size; it is every
    run's Stage II step size. ``done`` is called after each run (a progress bar).
    """
    seeds = range(TUNE_SEED, TUNE_SEED + config.tune_seeds)

    def best(method: str, stage_two_lr: float | None) -> float:
        scores = []
        for lr in config.lr_grid:
            total = 0.0
            for seed in seeds:
                two = lr if stage_two_lr is None else stage_two_lr
                got = run(method, judge, seed, config, lr=lr, stage_two_lr=two, record=False)
                total += got.final["pass1"]
                done()
            scores.append(total)
        return config.lr_grid[int(np.argmax(scores))]

    sparse = best("sparse", None) if sparse_lr is None else sparse_lr
    return {m: sparse if m == "sparse" else best(m, sparse) for m in methods}
