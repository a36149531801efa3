"""What does process scoring cost next to outcome scoring? Measured on one vLLM server.

The same real GSM8K rollouts (4 model solutions per question, one step per line) are
graded through :class:`~exprl_rewards.RewardPipeline` and :class:`OpenAIJudge` against a
real vLLM server with prefix caching on (the embedded default judge), in every layout:

- mode: ``outcome`` (one request per rollout), ``process-segment`` (released: one
  request per step, the step alone) and ``process-prefix`` (one per step, the rollout
  up to it);
- order: ``released`` (problem, reasoning, reference) or ``cache`` (problem, reference,
  then the varying part, so the shared head is served from the prefix cache);
- judge output: ``reasoning`` (the judge writes its reasoning before the score, as
  released; capped at ``--reasoning-max-tokens``) or ``score-only`` (one token, scored
  from its logprobs).

The prefix cache is reset before each run. From the server's counters it reports prompt
tokens, the part served from the prefix cache, generated tokens, and wall time
(min/median/max over repeats), and each run's wall-time ratio to outcome scoring in the
headline layout (cache order, score-only). The target is process scoring within 1.5x of
outcome scoring; the released layout is process-segment, released order, reasoning.

The 135M judge never finishes its reasoning with a score line, so reasoning runs always
write the full ``--reasoning-max-tokens`` and end unscored; their cost is the point here,
and a real judge writes longer reasoning than that cap, so the reasoning rows understate
its cost.

    python benchmarks/process_cost.py [--questions 2] [--block-size 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

from _common import Cost, gsm8k_rollouts, judge_server, measure, spread

from exprl_rewards import OpenAIJudge, RewardPipeline, Rollout
from exprl_rewards.judges.local_model import VLLMServer
from exprl_rewards.judges.templates import Mode, Order

MODES: tuple[Mode, ...] = ("outcome", "process-segment", "process-prefix")
ORDERS: tuple[Order, ...] = ("released", "cache")
STYLES = ("score-only", "reasoning")


def template(mode: str, style: str) -> str:
    return mode if style == "reasoning" else f"{mode}-score-only"


def run_once(
    server: VLLMServer,
    rollouts: Sequence[Rollout],
    mode: Mode,
    order: Order,
    style: str,
    args: argparse.Namespace,
) -> tuple[Cost, int, int]:
    judge = OpenAIJudge(
        server.model, base_url=server.url, top_logprobs=20, prefill=True,
        concurrency=args.concurrency, max_tokens=args.reasoning_max_tokens,
    )  # fmt: skip
    pipeline = RewardPipeline(
        judge,
        mode=mode,
        template=template(mode, style),
        slicer="newline",
        order=order,
    )
    batch = []
    cost = measure(server, lambda: batch.append(pipeline.score_sync(rollouts)))
    units = sum(len(r.segments) for r in batch[0].results)
    scored = sum(s.score is not None for r in batch[0].results for s in r.segments)
    return cost, units, scored


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=2, help="GSM8K questions (x 4 rollouts)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--reasoning-max-tokens", type=int, default=128)
    p.add_argument("--block-size", type=int, help="the server's KV block (CPU default 128)")
    p.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    args = p.parse_args()
    rollouts = gsm8k_rollouts(args.questions)
    configs = [(m, o, s) for s in args.styles for m in MODES for o in ORDERS]
    walls: dict[tuple[Mode, Order, str], list[float]] = {c: [] for c in configs}
    last: dict[tuple[Mode, Order, str], tuple[Cost, int, int]] = {}
    with judge_server(args.block_size) as server:
        for mode in MODES:  # warm-up: vLLM's first long prompts run slow
            run_once(server, rollouts, mode, "cache", "score-only", args)
        for _ in range(args.repeats):  # interleaved, so drift hits every layout alike
            for c in configs:
                last[c] = run_once(server, rollouts, *c, args)
                walls[c].append(last[c][0].wall)
                print(f"  {c}: {last[c][0].wall:.1f} s", file=sys.stderr, flush=True)
    print(
        f"{len(rollouts)} GSM8K rollouts ({args.questions} questions x 4), one step per line; "
        f"concurrency {args.concurrency}; reasoning capped at {args.reasoning_max_tokens} "
        f"tokens; {args.repeats} repeats; prefix cache reset before each run"
    )
    print(
        f"{'mode':<16} {'order':<9} {'output':<11} {'req':>4} {'scored':>6} {'prompt tok':>10} "
        f"{'cached':>7} {'prefilled':>9} {'generated':>9} {'wall s min/med/max':>19} {'x outcome':>9}"
    )
    base: tuple[Mode, Order, str] = ("outcome", "cache", "score-only")
    base_wall = statistics.median(walls[base]) if base in walls else float("nan")
    median = {c: statistics.median(w) for c, w in walls.items()}
    for c in configs:
        cost, units, scored = last[c]
        print(
            f"{c[0]:<16} {c[1]:<9} {c[2]:<11} {units:>4} {scored:>6} {cost.prompt:>10.0f} "
            f"{cost.hit_rate:>7.1%} {cost.computed:>9.0f} {cost.generated:>9.0f} "
            f"{spread(walls[c]):>19} {median[c] / base_wall:>8.2f}x"
        )
    print(
        f"x outcome: median wall time / that of outcome, cache order, score-only ({base_wall:.1f} s)"
    )
    for mode in MODES[1:]:
        c = (mode, "cache", "score-only")
        if c in median:
            verdict = "within" if median[c] / base_wall <= 1.5 else "MISSES"
            print(f"{mode}, cache order, score-only: {median[c] / base_wall:.2f}x outcome "
                  f"({verdict} the 1.5x target)")  # fmt: skip
    released: tuple[Mode, Order, str] = ("process-segment", "released", "reasoning")
    if released in median:
        print(
            f"released layout (process-segment, released order, reasoning): "
            f"{median[released] / base_wall:.2f}x outcome score-only; "
            f"{median[released] / median[('outcome', 'released', 'reasoning')]:.2f}x outcome "
            f"with the released order and reasoning"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
