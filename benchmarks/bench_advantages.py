"""Vectorised advantages vs the per-group Python loops trainers ship, side by side.

Sizes default to a realistic ExpRL batch: 512 prompts x 16 rollouts, 20 segments and
2,000 tokens per rollout. The baselines are written here the way RL trainers commonly
write them (verl's GRPO outcome advantage: a dict of per-group score lists and a loop
over rollouts; per-trajectory loops for process rewards and token broadcast).

    python benchmarks/bench_advantages.py [--groups 512] [--rollouts 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from exprl_rewards import Ragged, broadcast_to_tokens, outcome_advantages, process_advantages


def loop_grpo(scores: list[float], groups: list[int], eps: float = 1e-6) -> list[float]:
    by_group: dict[int, list[float]] = defaultdict(list)
    for s, g in zip(scores, groups, strict=True):
        by_group[g].append(s)
    stats = {}
    for g, members in by_group.items():
        mean = sum(members) / len(members)
        var = sum((x - mean) ** 2 for x in members) / (len(members) - 1)
        stats[g] = (mean, math.sqrt(var))
    return [(s - stats[g][0]) / (stats[g][1] + eps) for s, g in zip(scores, groups, strict=True)]


def loop_delta_tokens(rows: list[list[float]], tokens: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width))
    for i, (r, n_tok) in enumerate(zip(rows, tokens, strict=True)):
        adv = (
            [r[0]] if len(r) == 1 else [r[0] - r[-1]] + [r[k] - r[k - 1] for k in range(1, len(r))]
        )
        t = 0
        for a, n in zip(adv, n_tok, strict=True):
            for _ in range(n):
                out[i, t] = a
                t += 1
    return out


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def fmt(times: list[float]) -> str:
    return f"{min(times) * 1e3:8.1f} {statistics.median(times) * 1e3:8.1f} {max(times) * 1e3:8.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--groups", type=int, default=512)
    p.add_argument("--rollouts", type=int, default=16)
    p.add_argument("--segments", type=int, default=20)
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    n = args.groups * args.rollouts
    scores = rng.random(n)
    groups = np.repeat(np.arange(args.groups), args.rollouts)
    seg_scores = rng.random((n, args.segments))
    tokens = np.full((n, args.segments), args.tokens // args.segments)
    width = int(tokens[0].sum())  # --tokens rounded down to a multiple of --segments

    # Each side gets its natural input: flat numpy arrays for the library, Python lists
    # for the loops (what a per-sample reward manager holds).
    score_list, group_list = scores.tolist(), groups.tolist()
    rows, token_rows = seg_scores.tolist(), tokens.tolist()
    ragged_scores = Ragged(seg_scores.ravel(), np.full(n, args.segments))
    ragged_tokens = Ragged(tokens.ravel(), np.full(n, args.segments))
    # Same answers first, then speed.
    assert np.allclose(outcome_advantages(scores, groups).values, loop_grpo(score_list, group_list))
    ours_tok = broadcast_to_tokens(
        process_advantages(seg_scores.tolist(), "delta").values, token_rows
    )
    assert np.allclose(ours_tok.values, loop_delta_tokens(rows, token_rows, width))

    cases = [
        (
            "outcome GRPO",
            lambda: outcome_advantages(scores, groups),
            lambda: loop_grpo(score_list, group_list),
        ),
        (
            "process DeltaNorm + tokens",
            lambda: broadcast_to_tokens(
                process_advantages(ragged_scores, "delta").values, ragged_tokens
            ),
            lambda: loop_delta_tokens(rows, token_rows, width),
        ),
    ]
    print(
        f"{args.groups} groups x {args.rollouts} rollouts, {args.segments} segments, "
        f"{args.tokens} tokens each; ms over {args.repeats} repeats (min median max)"
    )
    print(f"{'case':<28} {'library':>26} {'plain loop':>26} {'speed-up':>9}")
    for name, ours, baseline in cases:
        a, b = timed(ours, args.repeats), timed(baseline, args.repeats)
        ratio = statistics.median(b) / statistics.median(a)
        print(f"{name:<28} {fmt(a)} {fmt(b)} {ratio:8.1f}x")


if __name__ == "__main__":
    main()
