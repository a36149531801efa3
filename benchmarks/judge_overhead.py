"""Library overhead and the cache: our judge vs a bare openai loop, side by side.

Against a real vLLM server (the embedded default judge), the same score-only outcome
requests on real GSM8K rollouts go through:

- **library**: ``OpenAIJudge`` (retries armed, parsing, logprob scoring) at concurrency C;
- **bare**: a plain ``openai.AsyncOpenAI`` loop with an ``asyncio.Semaphore(C)`` sending
  the same payloads and reading nothing back but the text;
- **sequential**: one request after another with the sync client, as a naive per-sample
  reward manager does;
- **cached**: the library again, over the same requests, with a warm on-disk cache.

Runs interleave (bare, library, sequential per repeat) so drift hits all alike.
Prints min/median/max wall time over repeats and throughput ratios.

    python benchmarks/judge_overhead.py [--requests 64] [--concurrency 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from _common import DATA, GSM8K_MODELS

from exprl_rewards.judges import JudgeCache, JudgeRequest, OpenAIJudge, judge_sync
from exprl_rewards.judges.local_model import VLLMServer
from exprl_rewards.judges.templates import get_template


def requests_for(n: int) -> list[JudgeRequest]:
    template = get_template("outcome-score-only")
    out: list[JudgeRequest] = []
    with (DATA / "outcome_labels" / "gsm8k_example_model_solutions.jsonl").open() as f:
        for q, line in enumerate(f):
            row = json.loads(line)
            for m in GSM8K_MODELS:
                out.append(
                    JudgeRequest.from_template(
                        template, key=f"{q}/{m}", question=row["question"],
                        reference=row["ground_truth"], response=row[m]["solution"],
                    )
                )  # fmt: skip
            if len(out) >= n:
                return out[:n]
    return out


def payload(server: VLLMServer, r: JudgeRequest) -> dict[str, Any]:
    messages = [dict(m) for m in r.messages] + [{"role": "assistant", "content": r.prefill}]
    return {
        "model": server.model,
        "messages": messages,
        "max_tokens": r.max_tokens,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 20,
        "extra_body": {"continue_final_message": True, "add_generation_prompt": False},
    }


async def bare(server: VLLMServer, requests: list[JudgeRequest], concurrency: int) -> int:
    client = openai.AsyncOpenAI(base_url=server.url, api_key="EMPTY", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(r: JudgeRequest) -> str:
        async with semaphore:
            reply = await client.chat.completions.create(**payload(server, r))
            return reply.choices[0].message.content or ""

    texts = await asyncio.gather(*(one(r) for r in requests))
    await client.close()
    return len(texts)


def sequential(server: VLLMServer, requests: list[JudgeRequest]) -> int:
    client = openai.OpenAI(base_url=server.url, api_key="EMPTY", max_retries=0)
    done = 0
    for r in requests:
        client.chat.completions.create(**payload(server, r))
        done += 1
    client.close()
    return done


def stats(times: list[float]) -> str:
    return f"{min(times):7.2f} {statistics.median(times):7.2f} {max(times):7.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    requests = requests_for(args.requests)
    cache = JudgeCache(Path(tempfile.mkdtemp()) / "judge.sqlite")
    times: dict[str, list[float]] = {"bare": [], "library": [], "sequential": [], "cached": []}
    with VLLMServer() as server:

        def library(with_cache: JudgeCache | None) -> int:
            judge = OpenAIJudge(
                server.model, base_url=server.url, top_logprobs=20, prefill=True,
                concurrency=args.concurrency, cache=with_cache,
            )  # fmt: skip
            return sum(j.scored for j in judge_sync(judge, requests))

        library(None)  # warm-up: kernels and the server's prefix cache
        for _ in range(args.repeats):
            runs: tuple[tuple[str, Callable[[], object]], ...] = (
                ("bare", lambda: asyncio.run(bare(server, requests, args.concurrency))),
                ("library", lambda: library(None)),
                ("sequential", lambda: sequential(server, requests)),
            )
            for name, run in runs:
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        library(cache)  # fill the cache
        calls_before = server.metrics().get("vllm:request_success_total", 0.0)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            library(cache)
            times["cached"].append(time.perf_counter() - t0)
        calls = server.metrics().get("vllm:request_success_total", 0.0) - calls_before
    n = len(requests)
    print(f"{n} score-only outcome requests (GSM8K), concurrency {args.concurrency}, "
          f"{args.repeats} repeats; SmolLM2-135M on a vLLM CPU server")  # fmt: skip
    print(f"{'path':<12} {'min s':>7} {'median':>7} {'max':>7} {'req/s':>7}")
    for name, t in times.items():
        print(f"{name:<12} {stats(t)} {n / statistics.median(t):7.1f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"library throughput / bare loop: {med['bare'] / med['library']:.3f}")
    print(f"library / sequential loop: {med['sequential'] / med['library']:.2f}x faster")
    print(f"second run from the cache: {calls:.0f} judge calls; wall {med['cached']:.3f} s, "
          f"{med['library'] / med['cached']:.0f}x faster than judging")  # fmt: skip


if __name__ == "__main__":
    main()
