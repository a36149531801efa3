"""Where a reference-trainer step spends its time, and what thread binding does to it.

Runs ``python -m exprl_rewards.train`` (Stage I, outcome, the ``cpu-tiny`` preset: 4
prompts x 4 rollouts, up to 128 tokens) for a few steps under each
``VLLM_CPU_OMP_THREADS_BIND`` setting of the in-process sampler, one run after the
other against one shared judge server, and reports the median over the steps after the
first of each phase: sampling, judging, training (forward, backward and the reference's
forward), the weight push, the whole step, and the push as a share of the step (target
under 5%).

    python benchmarks/train_step.py [--steps 4] [--binds nobind auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from exprl_rewards.judges.local_model import VLLMServer

PHASES = ("time_sample", "time_judge", "time_train", "time_push", "time_step")
CONFIG = """preset = "cpu-tiny"
[sampler]
max_tokens = 128
[judge]
base_url = ["{url}"]
model = "{model}"
[run]
threads_bind = "{bind}"
save_every = 1000
"""


def run(server: VLLMServer, bind: str, steps: int, folder: Path) -> list[dict[str, float]]:
    config = folder / f"{bind}.toml"
    config.write_text(CONFIG.format(url=server.url, model=server.model, bind=bind))
    out = folder / bind
    command = [sys.executable, "-m", "exprl_rewards.train", str(config), "--out", str(out),
               "--steps", str(steps), "--no-progress"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[1:]  # the first step warms up every phase


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--binds", nargs="+", default=["nobind", "auto"])
    args = p.parse_args()
    results = {}
    with (
        VLLMServer(extra_args=["--block-size", "32"]) as server,
        tempfile.TemporaryDirectory() as d,
    ):
        for bind in args.binds:
            results[bind] = run(server, bind, args.steps, Path(d))
            print(f"  {bind}: done", file=sys.stderr, flush=True)
    print(
        f"cpu-tiny, Stage I outcome: 4 prompts x 4 rollouts, <= 128 tokens; SmolLM2-135M "
        f"policy (float32) and judge; median of steps 2-{args.steps}"
    )
    print(f"{'bind':<8} " + " ".join(f"{k.removeprefix('time_') + ' s':>9}" for k in PHASES)
          + f" {'push/step':>9} {'gap max':>9}")  # fmt: skip
    for bind, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in PHASES}
        gap = max(r["logprob_gap_max"] for r in rows)
        print(f"{bind:<8} " + " ".join(f"{med[k]:>9.2f}" for k in PHASES)
              + f" {med['time_push'] / med['time_step']:>9.1%} {gap:>9.1e}")  # fmt: skip
    if len(results) == 2:
        a, b = (statistics.median(r["time_step"] for r in rows) for rows in results.values())
        names = list(results)
        print(f"step time {names[1]} / {names[0]}: {b / a:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
