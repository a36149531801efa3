"""Helpers shared by the judge benchmarks: real rollouts, and server-side token counts.

A measured run resets vLLM's prefix cache, reads the server's Prometheus counters before
and after, and reports what the server did: prompt tokens, the part of them served from
the prefix cache, generated tokens, and wall time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from exprl_rewards import Rollout
from exprl_rewards.judges.local_model import VLLMServer

DATA = Path(__file__).resolve().parents[1] / "data"
GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def gsm8k_rollouts(questions: int) -> list[Rollout]:
    """The first ``questions`` GSM8K problems x 4 model solutions each, as rollouts."""
    out: list[Rollout] = []
    with (DATA / "outcome_labels" / "gsm8k_example_model_solutions.jsonl").open() as f:
        for q, line in zip(range(questions), f, strict=False):
            row = json.loads(line)
            for m in GSM8K_MODELS:
                out.append(
                    Rollout(
                        id=f"{q}/{m}", group_id=str(q), question=row["question"],
                        reference=row["ground_truth"], response=row[m]["solution"],
                    )
                )  # fmt: skip
    return out


def judge_server(block_size: int | None = None) -> VLLMServer:
    """A vLLM server for the embedded judge that allows prefix-cache resets (use ``with``).

    ``block_size``: the KV-cache block, the unit the prefix cache reuses; vLLM's CPU
    build defaults to 128 tokens (its GPU build to 16).
    """
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # enables POST /reset_prefix_cache
    return VLLMServer(extra_args=["--block-size", str(block_size)] if block_size else [])


def reset_prefix_cache(server: VLLMServer) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/reset_prefix_cache", method="POST"
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


@dataclass(frozen=True)
class Cost:
    """What one run cost the server, from its counters."""

    wall: float
    requests: int
    prompt: float  # prompt tokens of the finished requests
    cached: float  # prompt tokens served from the prefix cache
    generated: float

    @property
    def computed(self) -> float:
        """Prompt tokens the server had to prefill: not served from the cache."""
        return self.prompt - self.cached

    @property
    def hit_rate(self) -> float:
        return self.cached / self.prompt if self.prompt else 0.0


COUNTERS = {
    "prompt": "vllm:prompt_tokens_total",
    "cached": "vllm:prefix_cache_hits_total",
    "generated": "vllm:generation_tokens_total",
    "requests": "vllm:request_success_total",
}


def measure(server: VLLMServer, run: Callable[[], object]) -> Cost:
    """Run ``run`` on a cold prefix cache; return its wall time and server counts."""
    reset_prefix_cache(server)
    before = server.metrics()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after = server.metrics()
    delta = {k: after.get(v, 0.0) - before.get(v, 0.0) for k, v in COUNTERS.items()}
    return Cost(
        wall=wall,
        requests=int(delta["requests"]),
        prompt=delta["prompt"],
        cached=delta["cached"],
        generated=delta["generated"],
    )


def spread(values: Sequence[float]) -> str:
    """``min/median/max`` of wall times, in seconds."""
    return f"{min(values):.1f}/{statistics.median(values):.1f}/{max(values):.1f}"


def write_gsm8k_input(path: Path, questions: int) -> int:
    """The rollouts of :func:`gsm8k_rollouts` as a JSONL file; their count."""
    rows = [{"id": r.id, "group_id": r.group_id, "question": r.question,
             "reference": r.reference, "response": r.response}
            for r in gsm8k_rollouts(questions)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def judge_args(servers: Sequence[VLLMServer]) -> list[str]:
    """The CLI's judge options for ``servers`` (replicas of one model)."""
    return [*(a for s in servers for a in ("--base-url", s.url)), "--model", servers[0].model]


def run_cli(
    inp: Path, out: Path, judge: list[str], batch: int, extra: list[str]
) -> dict[str, float]:
    """One timed run of the score CLI (score-only outcome, no cache) with the ``judge``
    options: its wall time and the judge tokens its summary counts."""
    summary = out.with_suffix(".summary.json")
    command = [sys.executable, "-m", "exprl_rewards.score", str(inp), "-o", str(out),
               "--mode", "outcome", "--template", "outcome-score-only", *judge,
               "--no-cache", "--batch-size", str(batch), "--summary-json", str(summary),
               *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"the score CLI failed ({done.returncode}):\n{done.stderr[-3000:]}")
    totals = json.loads(summary.read_text())
    if totals["already_done"]:
        raise RuntimeError(f"{out} held rows already: the run resumed, and its time means nothing")
    return {
        "wall": wall,
        "prompt": totals["prompt_tokens"],
        "completion": totals["completion_tokens"],
        "scored": totals["scored"],
    }
