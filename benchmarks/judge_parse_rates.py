"""Parse-failure rate of each built-in template with the local judge, and cache hit rate.

Scores 200 real rollouts (GSM8K model solutions: 50 questions x 4 models, with the
human reference) with every built-in template with the embedded default judge
(SmolLM2-135M-Instruct on vLLM in-process; ``--server`` uses a real vLLM OpenAI-compatible
server instead), then runs the same requests again to measure the on-disk cache. Process templates grade one step per rollout: the middle
line (segment mode) or the rollout up to it (prefix mode).

    python benchmarks/judge_parse_rates.py [--n 200] [--max-tokens 256] [--out FILE]
        [--templates NAME ...]

Prints a table; ``--out`` also writes every judge output as JSONL.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from exprl_rewards.judges import Judge, JudgeCache, JudgeRequest, OpenAIJudge, judge_sync
from exprl_rewards.judges.local_model import VLLMServer, default_model_dir
from exprl_rewards.judges.templates import TEMPLATES, get_template
from exprl_rewards.text.slicers import get_slicer

DATA = Path(__file__).resolve().parents[1] / "data"
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def rollouts(n: int) -> list[dict[str, str]]:
    out = []
    with (DATA / "outcome_labels" / "gsm8k_example_model_solutions.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            for model in MODELS:
                out.append(
                    {
                        "question": row["question"],
                        "reference": row["ground_truth"],
                        "response": row[model]["solution"],
                    }
                )
            if len(out) >= n:
                return out[:n]
    return out


def requests_for(name: str, items: list[dict[str, str]]) -> list[JudgeRequest]:
    template = get_template(name)
    slicer = get_slicer("newline")
    out = []
    for i, item in enumerate(items):
        variables: dict[str, Any] = dict(item)
        if template.mode != "outcome":
            segments = slicer.split(item["response"])
            k = len(segments) // 2
            variables.update(
                step=segments[k].text,
                previous=item["response"][: segments[k].start],
                step_index=k + 1,
                num_steps=len(segments),
            )
        out.append(JudgeRequest.from_template(template, key=f"{name}/{i}", **variables))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--server", action="store_true", help="judge through a vLLM server, not in-process"
    )
    p.add_argument(
        "--templates", nargs="+", choices=list(TEMPLATES), default=list(TEMPLATES),
        help="which templates to measure (default: all)",
    )  # fmt: skip
    p.add_argument(
        "--constrain-scores", action="store_true",
        help="score-only templates: decode only the scale's digits (vLLM structured outputs)",
    )  # fmt: skip
    args = p.parse_args()
    items = rollouts(args.n)
    cache_path = Path(tempfile.mkdtemp()) / "judge.sqlite"
    rows = []
    records: list[dict[str, Any]] = []
    server = VLLMServer().start() if args.server else None
    local = None
    if server is None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM takes ~all RAM otherwise
        from exprl_rewards.judges.vllm import VLLMJudge

        local = VLLMJudge(
            default_model_dir(), name="smollm2-135m-instruct", engine_process=False,
            max_model_len=2048, enforce_eager=True, max_tokens=args.max_tokens,
            constrain_scores=args.constrain_scores,
        )  # fmt: skip
    try:
        for name in args.templates:
            requests = requests_for(name, items)
            cache = JudgeCache(cache_path)
            judge: Judge
            if server is not None:
                judge = OpenAIJudge(
                    server.model, base_url=server.url, max_tokens=args.max_tokens, top_logprobs=20,
                    prefill=True, concurrency=32, cache=cache,
                    constrain_scores=args.constrain_scores,
                )  # fmt: skip
            else:
                assert local is not None
                local.cache = cache
                judge = local
            t0 = time.perf_counter()
            first = judge_sync(judge, requests)
            t1 = time.perf_counter()
            second = judge_sync(judge, requests)
            t2 = time.perf_counter()
            reasons = collections.Counter(
                (j.reason or "").split(" (")[0] for j in first if not j.scored
            )
            logprob = sum(j.expected is not None for j in first)
            hits = sum(j.cached for j in second)
            same = all(
                a.score == b.score or (a.score is None and b.score is None)
                for a, b in zip(first, second, strict=True)
            )
            rows.append(
                (
                    name,
                    len(first),
                    sum(not j.scored for j in first),
                    logprob,
                    hits,
                    t1 - t0,
                    t2 - t1,
                    same,
                    reasons,
                )
            )
            print(f"done {name}: {rows[-1][:8]}", flush=True)
            records.extend(
                {
                    "template": name,
                    "key": j.key,
                    "score": j.score,
                    "reason": j.reason,
                    "text": j.text,
                }
                for j in first
            )
    finally:
        if server is not None:
            server.stop()
    backend = "a vLLM server" if args.server else "vLLM in-process"
    print(
        f"{len(items)} rollouts, SmolLM2-135M-Instruct on {backend} (CPU), max_tokens {args.max_tokens}"
    )
    header = ("template", "n", "unparsed", "rate", "logprob", "2nd-pass hits", "1st s", "2nd s")
    print("{:<28} {:>4} {:>9} {:>6} {:>8} {:>13} {:>7} {:>6}  same".format(*header))
    for name, n, bad, logprob, hits, s1, s2, same, _ in rows:
        hit_rate = f"{hits} ({hits / n:.1%})"
        print(
            f"{name:<28} {n:>4} {bad:>9} {bad / n:>6.1%} {logprob:>8} {hit_rate:>13} "
            f"{s1:>7.1f} {s2:>6.2f}  {same}"
        )
    print("\nUnscored reasons (first pass):")
    for name, *_, reasons in rows:
        for reason, count in reasons.most_common():
            print(f"  {name:<28} {count:>4}  {reason}")
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    main()
