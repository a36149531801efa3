"""Does the cache-friendly prompt order pay? Prefix-cache hits and wall time, side by side.

Against a real vLLM server (prefix caching on, the embedded default judge), grade the
same real rollouts with the released section order (problem, reasoning, reference) and
with the cache-friendly order (problem, reference, then the varying part), for outcome
scoring and for process-prefix scoring (every step of every rollout). The prefix cache
is reset before each run (vLLM dev-mode endpoint), so runs do not help each other.

Reports prompt tokens, prompt tokens served from the prefix cache (the server's
``vllm:prefix_cache_hits_total`` counter), and wall time; and the ratios.

    python benchmarks/prefix_cache.py [--questions 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from pathlib import Path

from exprl_rewards.judges import JudgeRequest, OpenAIJudge, judge_sync
from exprl_rewards.local_model import VLLMServer
from exprl_rewards.slicers import get_slicer
from exprl_rewards.templates import get_template

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def build(mode: str, order: str, questions: int) -> list[JudgeRequest]:
    rows = []
    with (DATA / "outcome_labels" / "gsm8k_example_model_solutions.jsonl").open() as f:
        for line, _ in zip(f, range(questions), strict=False):
            rows.append(json.loads(line))
    slicer = get_slicer("newline")
    template = get_template(f"{mode}-score-only")
    requests = []
    for q, row in enumerate(rows):
        for m in MODELS:
            base = {
                "question": row["question"],
                "reference": row["ground_truth"],
                "response": row[m]["solution"],
            }
            if mode == "outcome":
                requests.append(
                    JudgeRequest.from_template(template, key=f"{q}/{m}", order=order, **base)
                )  # type: ignore[arg-type]
                continue
            segments = slicer.split(base["response"])
            for s in segments:
                requests.append(
                    JudgeRequest.from_template(
                        template, key=f"{q}/{m}/{s.index}", order=order,  # type: ignore[arg-type]
                        step=s.text, previous=base["response"][: s.start],
                        step_index=s.index + 1, num_steps=len(segments), **base,
                    )
                )  # fmt: skip
    return requests


def reset_prefix_cache(server: VLLMServer) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/reset_prefix_cache", method="POST"
    )
    with urllib.request.urlopen(req, timeout=30):
        pass


def run(server: VLLMServer, requests: list[JudgeRequest]) -> tuple[float, float, float]:
    reset_prefix_cache(server)
    before = server.metrics()
    judge = OpenAIJudge(
        server.model, base_url=server.url, top_logprobs=20, prefill=True, concurrency=8
    )
    t0 = time.perf_counter()
    results = judge_sync(judge, requests)
    wall = time.perf_counter() - t0
    after = server.metrics()
    assert all(r.scored for r in results), [r.reason for r in results if not r.scored][:3]
    queried = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    return queried, hits, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # enables /reset_prefix_cache
    with VLLMServer() as server:
        judge_sync(  # warm the kernels up, so the first timed run is not penalised
            OpenAIJudge(server.model, base_url=server.url, prefill=True, top_logprobs=20),
            build("outcome", "cache", 1),
        )
        print(
            f"{args.questions} GSM8K questions x 4 rollouts; score-only templates; {args.repeats} repeats"
        )
        print(
            f"{'mode':<16} {'order':<9} {'requests':>8} {'prompt tok':>10} {'from cache':>10} {'hit %':>6} {'wall s (median)':>16}"
        )
        for mode in ("outcome", "process-prefix"):
            walls: dict[str, float] = {}
            for order in ("released", "cache"):
                requests = build(mode, order, args.questions)
                runs = [run(server, requests) for _ in range(args.repeats)]
                queried, hits, _ = runs[-1]
                walls[order] = statistics.median(w for *_, w in runs)
                print(
                    f"{mode:<16} {order:<9} {len(requests):>8} {queried:>10.0f} {hits:>10.0f} "
                    f"{hits / queried:>6.1%} {walls[order]:>16.1f}"
                )
            print(
                f"{mode:<16} wall time, released / cache-friendly: {walls['released'] / walls['cache']:.2f}x"
            )


if __name__ == "__main__":
    main()
