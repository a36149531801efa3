"""What the ``score --ray`` driver costs per input row, before any judge call.

The driver reads and validates every row (so that bad input is reported by file:line
before any judge call), learns which ids are written, and cuts the pending rows into
batches of whole groups, each pickled into one row of a Ray Dataset. This measures those
steps on GSM8K rollouts copied to ``--rows`` rows (4 per group, each with its own id), in
a fresh process per size: wall time, the process's peak memory, and the bytes the
batches hand to Ray's object store. The judge is not involved: its cost per row is the
subject of ``ray_scale.py`` and ``judge_replicas.py``.

    python benchmarks/driver_scale.py [--rows 50000 200000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import gsm8k_rollouts


def write_rows(path: Path, n: int) -> None:
    base = gsm8k_rollouts(25)
    with path.open("w") as f:
        for i in range(n):
            r = base[i % len(base)]
            f.write(json.dumps({"id": f"r{i}", "group_id": f"g{i // 4}", "question": r.question,
                                "reference": r.reference, "response": r.response}) + "\n")  # fmt: skip


def measure(path: Path) -> dict[str, float]:
    """In this process: read, validate, batch and pickle, as the driver does."""
    from exprl_rewards.cli.ray_score import _dataset_rows
    from exprl_rewards.cli.score import _batches
    from exprl_rewards.io.jsonl import read_rollouts

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    rows, errors = read_rollouts(str(path))
    read = time.perf_counter() - start
    dataset = _dataset_rows(list(_batches(rows, 16)))
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": len(rows), "errors": len(errors), "read_s": read, "total_s": total,
            "peak_mb": peak / 1024, "added_mb": (peak - before) / 1024,
            "object_store_mb": sum(len(d["rows"]) for d in dataset) / 2**20}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    p.add_argument("--measure", help=argparse.SUPPRESS)  # the child process's input
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    print("rows      file MB  read s  +batch s  rows/s   peak MB  MB per 1k rows  to Ray MB")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = Path(tmp) / f"{n}.jsonl"
            write_rows(path, n)
            size = path.stat().st_size / 2**20
            out = subprocess.run([sys.executable, __file__, "--measure", str(path)],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            m = json.loads(out)
            if m["rows"] != n or m["errors"]:
                raise RuntimeError(f"read {m['rows']} of {n} rows, {m['errors']} errors")
            print(f"{n:<9d} {size:7.0f}  {m['read_s']:6.1f}  {m['total_s']:8.1f}  "
                  f"{n / m['total_s']:6.0f}  {m['peak_mb']:7.0f}  {m['added_mb'] / n * 1000:14.1f}"
                  f"  {m['object_store_mb']:9.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
