"""Rows per second: the score CLI on one machine against ``--ray`` with 1 and 2 actors.

One real vLLM server (the embedded judge) grades the same GSM8K rollouts (score-only
outcome template, no cache) through the real CLI three ways, interleaved over repeats:

- **single**: ``python -m exprl_rewards.score`` (batches of whole groups, in order);
- **ray-1**, **ray-2**: the same with ``--ray --ray-actors N`` on a local Ray cluster the
  run starts (its start-up is part of the wall time, as it is for a user).

Prints rows per second and the judge server's prompt and generated tokens per second
for each, so that the bottleneck is visible: the judge's token throughput, not the
library or Ray.

    python benchmarks/ray_scale.py [--questions 24] [--repeats 2] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, GSM8K_MODELS

from exprl_rewards.local_model import VLLMServer

SETTINGS = {"single": [], "ray-1": ["--ray", "--ray-actors", "1"],
            "ray-2": ["--ray", "--ray-actors", "2"]}  # fmt: skip


def write_input(path: Path, questions: int) -> int:
    rows = []
    with (DATA / "outcome_labels" / "gsm8k_example_model_solutions.jsonl").open() as f:
        for q, line in zip(range(questions), f, strict=False):
            row = json.loads(line)
            for m in GSM8K_MODELS:
                rows.append({"id": f"{q}/{m}", "group_id": str(q), "question": row["question"],
                             "reference": row["ground_truth"], "response": row[m]["solution"]})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def run(inp: Path, out: Path, server: VLLMServer, batch: int, extra: list[str]) -> dict:
    summary = out.with_suffix(".summary.json")
    command = [sys.executable, "-m", "exprl_rewards.score", str(inp), "-o", str(out),
               "--mode", "outcome", "--template", "outcome-score-only", "--base-url",
               server.url, "--model", server.model, "--no-cache", "--batch-size", str(batch),
               "--summary-json", str(summary), *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    totals = json.loads(summary.read_text())
    return {
        "wall": wall,
        "prompt": totals["prompt_tokens"],
        "completion": totals["completion_tokens"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=24, help="GSM8K questions (x4 rollouts)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, VLLMServer() as server:
        inp = Path(tmp) / "in.jsonl"
        n = write_input(inp, args.questions)
        walls: dict[str, list[float]] = {k: [] for k in SETTINGS}
        tokens: dict[str, tuple[int, int]] = {}
        for repeat in range(args.repeats):
            for name, extra in SETTINGS.items():
                out = Path(tmp) / f"{name}-{repeat}.jsonl"
                got = run(inp, out, server, args.batch_size, extra)
                walls[name].append(got["wall"])
                tokens[name] = (got["prompt"], got["completion"])
        print(f"{n} rollouts, {args.repeats} repeats, batch {args.batch_size}; median wall")
        base = statistics.median(walls["single"])
        for name, w in walls.items():
            m = statistics.median(w)
            prompt, completion = tokens[name]
            print(f"{name:7s} {m:6.1f} s  {n / m:5.2f} rows/s  x{base / m:4.2f} vs single  "
                  f"judge {prompt / m:7.0f} prompt + {completion / m:5.1f} generated tokens/s")  # fmt: skip


if __name__ == "__main__":
    main()
