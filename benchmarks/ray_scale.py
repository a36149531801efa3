"""Rows per second: the score CLI on one machine against ``--ray`` with 1 and 2 actors.

One real vLLM server (the embedded judge) grades the same GSM8K rollouts (score-only
outcome template, no cache) through the real CLI, after one untimed warm-up run, the
settings interleaved over repeats:

- **single**: ``python -m exprl_rewards.score`` (batches of whole groups, in order);
- **ray-1**, **ray-2**: the same with ``--ray --ray-actors N`` on a local Ray cluster the
  run starts (its start-up is part of the wall time, as it is for a user);
- **ray-2, 2 servers** (``--servers 2``): two judge replicas behind repeated
  ``--base-url``, on the same cores: what a second replica costs where there is no spare
  hardware for it.

Prints rows per second and the judge server's prompt and generated tokens per second
for each, so that the bottleneck is visible: the judge's token throughput, not the
library or Ray.

    python benchmarks/ray_scale.py [--questions 24] [--repeats 3] [--batch-size 16] [--servers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

from _common import judge_args, run_cli, write_gsm8k_input

from exprl_rewards.judges.local_model import VLLMServer

SETTINGS = {"single": [], "ray-1": ["--ray", "--ray-actors", "1"],
            "ray-2": ["--ray", "--ray-actors", "2"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=24, help="GSM8K questions (x4 rollouts)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--servers", type=int, default=1, help="2: also ray-2 over two replicas")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        servers = [stack.enter_context(VLLMServer()) for _ in range(args.servers)]
        settings = dict(SETTINGS)
        if args.servers > 1:
            settings[f"ray-2, {args.servers} servers"] = SETTINGS["ray-2"]
        inp = Path(tmp) / "in.jsonl"
        n = write_gsm8k_input(inp, args.questions)
        run_cli(
            inp, Path(tmp) / "warm-up.jsonl", judge_args(servers), args.batch_size, []
        )  # untimed: the
        # servers' first requests are slow (3.5x in one measurement)
        walls: dict[str, list[float]] = {k: [] for k in settings}
        tokens: dict[str, tuple[float, float]] = {}
        for repeat in range(args.repeats):
            for name, extra in settings.items():
                out = Path(tmp) / f"{name.replace(' ', '')}-{repeat}.jsonl"
                use = servers if "servers" in name else servers[:1]
                got = run_cli(inp, out, judge_args(use), args.batch_size, extra)
                walls[name].append(got["wall"])
                tokens[name] = (got["prompt"], got["completion"])
        print(f"{n} rollouts, {args.repeats} repeats, batch {args.batch_size}; median wall")
        base = statistics.median(walls["single"])
        for name, w in walls.items():
            m = statistics.median(w)
            prompt, completion = tokens[name]
            print(f"{name:18s} {m:6.1f} s  {n / m:5.2f} rows/s  x{base / m:4.2f} vs single  "
                  f"judge {prompt / m:7.0f} prompt + {completion / m:5.1f} generated tokens/s")  # fmt: skip


if __name__ == "__main__":
    main()
