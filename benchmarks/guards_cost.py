"""What the guards cost on honest rollouts, side by side with what they save.

On real GSM8K model solutions (4 per question, labelled right or wrong):

- **CPU**: the guards' own time per rollout (content gate + neutraliser) against the
  pipeline's own per-rollout work without them (slicing and rendering the judge
  requests), interleaved per repeat;
  and the verifier cap's answer check per rollout beside them;
- **with ``--judge``**: the embedded judge on a real vLLM server grades the same rollouts
  with ``--guards none``, the default guards, the defaults plus ``verifier-cap`` and the
  defaults plus ``second-look``: wall time, judge requests, unscored rollouts, and the
  AUROC of right against wrong solutions (over the scored ones) for each. Both share one judge cache: when
  the guards change nothing on honest text, the guarded run's requests are the same
  prompts, all answered from the cache, with the same scores (vLLM on CPU is not
  bit-deterministic across batches, so without the cache the two AUROCs would differ
  by noise alone).

    python benchmarks/guards_cost.py [--questions 100] [--repeats 5] [--judge --judged 24]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import gsm8k_rollouts

from exprl_rewards import RewardPipeline
from exprl_rewards.audit import load_dataset
from exprl_rewards.judges import Judgement, JudgeRequest
from exprl_rewards.judges.guards import DEFAULT_GUARDS, get_guards
from exprl_rewards.rewards.metrics import auroc
from exprl_rewards.text.answers import verify


class _NoJudge:
    """Stands in for a judge where only the CPU work before the judge is timed."""

    backend, model = "none", "none"

    async def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        raise NotImplementedError("only the work before the judge is timed")


def cpu(questions: int, repeats: int) -> None:
    rollouts = gsm8k_rollouts(questions)
    plain = RewardPipeline(_NoJudge(), mode="process-prefix", slicer="newline")
    guarded = RewardPipeline(_NoJudge(), mode="process-prefix", slicer="newline",
                             guards=get_guards(",".join(DEFAULT_GUARDS)))  # fmt: skip
    times: dict[str, list[float]] = {"pipeline work": [], "guards": [], "answer check": []}
    fired = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for r in rollouts:
            plain.requests(r, plain.segments(r))
        times["pipeline work"].append(time.perf_counter() - start)
        start = time.perf_counter()
        fired = sum(bool(guarded.guard(r)[0]) for r in rollouts)
        times["guards"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for r in rollouts:
            verify(r.response, r.reference)
        times["answer check"].append(time.perf_counter() - start)
    n = len(rollouts)
    print(f"CPU, {n} GSM8K model solutions, {repeats} repeats (us per rollout, min/median/max)")
    for name, ts in times.items():
        us = [t / n * 1e6 for t in ts]
        print(f"  {name:14s} {min(us):8.1f} {statistics.median(us):8.1f} {max(us):8.1f}")
    work = statistics.median(times["pipeline work"])
    ratio, check = (statistics.median(times[k]) / work for k in ("guards", "answer check"))
    print(f"  default guards / pipeline work: {ratio:.2f}x; fired on {fired} of {n} rollouts")
    print(f"  verifier cap's answer check / pipeline work: {check:.2f}x")


def judged(questions: int) -> None:
    from exprl_rewards.judges import OpenAIJudge
    from exprl_rewards.judges.local_model import VLLMServer

    items = load_dataset("gsm8k-solutions")[: questions * 4]
    rollouts = [i.rollout for i in items]
    labels = [float("nan") if i.label is None else float(i.label) for i in items]
    with VLLMServer() as server, tempfile.TemporaryDirectory() as tmp:
        judge = OpenAIJudge(server.model, base_url=server.url, prefill=True, top_logprobs=20,
                            max_tokens=8, constrain_scores=True,  # as the score CLI's own
                            cache=Path(tmp) / "cache.sqlite")  # fmt: skip
        print(f"\nEmbedded judge, outcome score-only, {len(rollouts)} rollouts")
        default = ",".join(DEFAULT_GUARDS)
        for name in ("none", default, f"{default},verifier-cap", f"{default},second-look"):
            pipeline = RewardPipeline(judge, mode="outcome", template="outcome-score-only",
                                      guards=get_guards(name))  # fmt: skip
            start = time.perf_counter()
            batch = pipeline.score_sync(rollouts)
            wall = time.perf_counter() - start
            scores = [float("nan") if r.score is None else r.score for r in batch.results]
            summary = batch.summary()
            unscored = sum(r.score is None for r in batch.results)
            print(f"  guards {name:37s} wall {wall:6.1f} s, {summary['judge_requests']} requests"
                  f" ({summary['cache_hits']} from the cache), {unscored} unscored,"
                  f" AUROC {auroc(scores, labels):.3f}, fired {summary['guards_fired']}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--judge", action="store_true", help="also grade with the embedded judge")
    p.add_argument("--judged", type=int, default=24, help="questions the judge grades")
    args = p.parse_args()
    cpu(args.questions, args.repeats)
    if args.judge:
        judged(args.judged)


if __name__ == "__main__":
    main()
