"""How does process-scoring cost grow with steps per rollout, and with rollout length?

Real long rollouts (the longest Qwen2.5-Math-7B responses in ``data/``, 9.4k
and 10.4k characters, graded against the MATH reference solution) are graded through
:class:`~exprl_rewards.RewardPipeline` on a real vLLM server (prefix caching on, the
embedded judge, score-only templates, cache-friendly order):

- **steps**: the first ``--chars`` characters of each rollout cut into k = 1, 2, 4 ... 32
  equal steps (at whitespace), so only the number of steps changes;
- **length**: the first L characters cut into ``--fixed-steps`` steps, L doubling, so only
  the length changes.

For process-segment and process-prefix scoring it reports requests, scored steps, prompt
tokens, the part the server had to prefill (not served from the prefix cache), wall time
(min/median/max over repeats) and wall time per step. Prefix mode sends the rollout up to
each step, so its prompt tokens grow with k squared; the prefix cache should keep the
prefilled tokens, and the wall time, close to linear. Growth stops where a prompt passes
the judge's context (2,048 tokens): those steps come back unscored, with vLLM's reason.

    python benchmarks/growth.py [--chars 2400] [--repeats 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from _common import DATA, Cost, judge_server, measure, spread

from exprl_rewards import OpenAIJudge, RewardPipeline, Rollout, Segment
from exprl_rewards.judges.local_model import VLLMServer
from exprl_rewards.judges.templates import Mode

MODES: tuple[Mode, ...] = ("process-segment", "process-prefix")


@dataclass(frozen=True)
class EqualSlicer:
    """Cut text into ``k`` steps of about equal length, each cut moved to a whitespace."""

    k: int

    def split(self, text: str) -> tuple[Segment, ...]:
        if not text:
            return ()
        cuts = [0]
        for i in range(1, self.k):
            at = max(i * len(text) // self.k, cuts[-1] + 1)
            while at < len(text) and not text[at - 1].isspace():
                at += 1
            if at >= len(text):
                break
            cuts.append(at)
        cuts.append(len(text))
        return tuple(
            Segment(i, a, b, text[a:b]) for i, (a, b) in enumerate(itertools.pairwise(cuts))
        )


def long_rollouts(count: int) -> list[Rollout]:
    """The ``count`` longest Qwen2.5-Math responses, with their question and reference."""
    found = []
    with (DATA / "outcome_labels" / "qwen25math_math_cot_100_rm_maj.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            for j, text in enumerate(row["response"]):
                found.append((len(text), f"{row['idx']}/{j}", row["question"], row["gt_cot"], text))
    found.sort(reverse=True)
    return [
        Rollout(id=i, group_id=i.split("/")[0], question=q, reference=ref, response=text)
        for _, i, q, ref, text in found[:count]
    ]


def run(
    server: VLLMServer,
    rollouts: Sequence[Rollout],
    mode: Mode,
    k: int,
    chars: int,
    concurrency: int,
) -> tuple[Cost, int, int]:
    judge = OpenAIJudge(
        server.model, base_url=server.url, top_logprobs=20, prefill=True, concurrency=concurrency
    )
    pipeline = RewardPipeline(
        judge,
        mode=mode,
        template=f"{mode}-score-only",
        slicer=EqualSlicer(k),
    )
    cut = [Rollout(r.id, r.group_id, r.question, r.reference, r.response[:chars]) for r in rollouts]
    batch = []
    cost = measure(server, lambda: batch.append(pipeline.score_sync(cut)))
    steps = sum(len(r.segments) for r in batch[0].results)
    scored = sum(s.score is not None for r in batch[0].results for s in r.segments)
    return cost, steps, scored


def table(
    title: str,
    axis: str,
    points: list[tuple[Mode, int, int]],
    server: VLLMServer,
    args: argparse.Namespace,
) -> None:
    rollouts = long_rollouts(args.rollouts)
    walls: dict[tuple[Mode, int, int], list[float]] = {}
    last: dict[tuple[Mode, int, int], tuple[Cost, int, int]] = {}
    for _ in range(args.repeats):
        for point in points:
            last[point] = run(server, rollouts, *point, args.concurrency)
            walls.setdefault(point, []).append(last[point][0].wall)
            print(f"  {title} {point}: {last[point][0].wall:.1f} s", file=sys.stderr, flush=True)
    print()
    print(title)
    print(
        f"{'mode':<16} {axis:>6} {'steps':>5} {'scored':>6} {'prompt tok':>10} {'prefilled':>9} "
        f"{'wall s min/med/max':>19} {'s/step':>6} {'x first':>7}"
    )
    for mode in MODES:
        first = None
        for point in (p for p in points if p[0] == mode):
            cost, steps, scored = last[point]
            wall = statistics.median(walls[point])
            first = first or wall
            value = point[1] if axis == "k" else point[2]
            print(
                f"{mode:<16} {value:>6} {steps:>5} {scored:>6} {cost.prompt:>10.0f} "
                f"{cost.computed:>9.0f} {spread(walls[point]):>19} {wall / steps:>6.2f} "
                f"{wall / first:>6.1f}x"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rollouts", type=int, default=2)
    p.add_argument("--chars", type=int, default=2400, help="rollout length for the steps table")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--fixed-steps", type=int, default=8, help="steps for the length table")
    p.add_argument("--lengths", type=int, nargs="+", default=[600, 1200, 2400, 4800, 9600])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    print(
        f"{args.rollouts} Qwen2.5-Math rollouts (the longest), score-only, cache order; "
        f"concurrency {args.concurrency}; {args.repeats} repeats; prefix cache reset before "
        f"each run; judge context 2,048 tokens"
    )
    with judge_server() as server:
        for mode in MODES:  # warm-up: vLLM's first long prompts run slow
            run(server, long_rollouts(args.rollouts), mode, 4, args.chars, args.concurrency)
        table(
            f"Steps: the first {args.chars} characters in k steps",
            "k",
            [(m, k, args.chars) for m in MODES for k in args.steps],
            server,
            args,
        )
        table(
            f"Length: the first L characters in {args.fixed_steps} steps",
            "L",
            [(m, args.fixed_steps, n) for m in MODES for n in args.lengths],
            server,
            args,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
