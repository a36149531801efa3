"""Process scoring modes side by side: what each costs against outcome scoring, and how
its step scores agree with process-prefix's. One server, one run, modes interleaved.

Two sets, graded with the shipped score-only templates, scores constrained to one digit
(process-tagged: one digit per step), as the embedded judge grades, cache order,
concurrency 16, KV block 32:

- the main job: ``examples/rollouts.jsonl`` (36 rollouts, one step per line);
- ProcessBench GSM8K (``data/step_labels/processbench``, the first ``--processbench``
  traces, steps as labelled), where each mode's first-error F1 is scored too: the first
  step whose calibrated score is below 0.5 is the predicted first error.

Cost: requests, prompt tokens, prompt tokens the server prefilled (not served from the
prefix cache), wall time (min/median/max over ``--repeats``), and the median wall time
against outcome's. Agreement with process-prefix, step by step: Spearman's rho, and the
share of steps whose rounded scores are equal.

A process reward model (``PRMJudge``, Math-Shepherd convention, transformers in this
process) runs in the same run on the same rollouts for its cost: one forward pass a
rollout, every token prefilled (no prefix cache). The model is the embedded SmolLM2,
**not** a PRM: its scores mean nothing and are left out of the agreement columns.

Anchoring (process-growing): each conversation's step k >= 2 is asked again with the
judge's answer to step k - 1 replaced by the far end of the scale (1 if it said 3 or
more, else 5). The mean shift of step k's score toward the planted answer, in score
points, is how much the judge's own earlier scores pull its later ones.

    python benchmarks/process_modes.py [--repeats 2] [--processbench 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from _common import Cost, judge_server, measure, spread

from exprl_rewards import OpenAIJudge, RewardPipeline, Rollout
from exprl_rewards.audit.datasets import load_dataset
from exprl_rewards.io.jsonl import read_rollouts
from exprl_rewards.judges.base import Judgement, judge_sync
from exprl_rewards.judges.local_model import VLLMServer, default_model_dir
from exprl_rewards.judges.prm import PRMJudge
from exprl_rewards.judges.templates import Mode
from exprl_rewards.rewards.growing import conversation
from exprl_rewards.rewards.metrics import first_below, processbench, spearman
from exprl_rewards.rewards.pipeline import BatchResult

MODES: tuple[Mode, ...] = (
    "outcome", "process-segment", "process-prefix", "process-growing", "process-tagged"
)  # fmt: skip


@dataclass(frozen=True)
class Set:
    name: str
    rollouts: tuple[Rollout, ...]
    slicer: str
    first_errors: tuple[int, ...] | None = None


def pipeline(server: VLLMServer, mode: Mode, slicer: str) -> RewardPipeline:
    judge = OpenAIJudge(server.model, base_url=server.url, top_logprobs=20, concurrency=16,
                        constrain_scores=True)  # fmt: skip
    return RewardPipeline(judge, mode=mode, template=f"{mode}-score-only", slicer=slicer)


def run_once(server: VLLMServer, data: Set, mode: Mode) -> tuple[Cost, BatchResult]:
    scorer = pipeline(server, mode, data.slicer)
    out: list[BatchResult] = []
    cost = measure(server, lambda: out.append(scorer.score_sync(data.rollouts)))
    return cost, out[0]


def steps(batch: BatchResult) -> list[float | None]:
    return [s.raw for r in batch.results for s in r.segments]


def agreement(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[float, float]:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(pairs) < 3:
        return float("nan"), float("nan")
    x, y = np.array(pairs).T
    return spearman(x, y), float(np.mean(np.round(x) == np.round(y)))


def first_error_f1(batch: BatchResult, labels: Sequence[int]) -> float:
    predicted = [
        first_below([np.nan if s.score is None else s.score for s in r.segments], 0.5)
        for r in batch.results
    ]
    return processbench(predicted, labels)["f1"]


def run_prm(data: Set) -> tuple[float, int, int]:
    """Wall time, forward passes and prompt tokens of the PRM backend on ``data``."""
    judge = PRMJudge(default_model_dir(), convention="shepherd")
    judge.loaded()
    scorer = RewardPipeline(judge, mode="process-tagged", slicer=data.slicer)
    start = time.perf_counter()
    batch = scorer.score_sync(data.rollouts)
    return time.perf_counter() - start, judge.forwards, batch.summary()["prompt_tokens"]


def anchoring(server: VLLMServer, data: Set, batch: BatchResult) -> tuple[float, int]:
    """Mean shift of step k's score toward a planted answer to step k - 1; pairs asked."""
    scorer = pipeline(server, "process-growing", data.slicer)
    asked, planted, before = [], [], []
    for rollout, result in zip(data.rollouts, batch.results, strict=True):
        chain = scorer.requests(rollout, scorer.segments(rollout))
        answers = list(result.judgements)
        for k in range(1, len(chain)):
            if answers[k - 1].score is None or answers[k].score is None:
                continue
            far = 1 if answers[k - 1].score >= 3 else 5  # type: ignore[operator]
            fake = [*answers[: k - 1], Judgement(float(far), None, text=str(far))]
            asked.append(conversation(chain, fake, k))
            planted.append(far)
            before.append(float(answers[k].score or 0.0))
    again = judge_sync(scorer.judge, asked)
    shifts = [
        (j.score - b) * np.sign(p - b)
        for j, b, p in zip(again, before, planted, strict=True)
        if j.score is not None and p != b
    ]
    return float(np.mean(shifts)) if shifts else float("nan"), len(shifts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--processbench", type=int, default=40, help="ProcessBench GSM8K traces")
    args = p.parse_args()
    rows, _ = read_rollouts("examples/rollouts.jsonl")
    labelled = load_dataset("processbench-gsm8k")[: args.processbench]
    sets = (
        Set("main job", tuple(row.rollout for row in rows), "newline"),
        Set("ProcessBench GSM8K", tuple(item.rollout for item in labelled), "blank-line",
            tuple(item.first_error for item in labelled)),  # type: ignore[misc]
    )  # fmt: skip
    configs = [(s, m) for s in sets for m in MODES]
    walls: dict[tuple[Set, Mode], list[float]] = {c: [] for c in configs}
    last: dict[tuple[Set, Mode], tuple[Cost, BatchResult]] = {}
    with judge_server(32) as server:
        for data in sets:  # warm-up: first long prompts and grammars run slow
            for mode in MODES:
                run_once(server, Set(data.name, data.rollouts[:4], data.slicer), mode)
        for _ in range(args.repeats):
            for c in configs:
                last[c] = run_once(server, *c)
                walls[c].append(last[c][0].wall)
                print(f"  {c[0].name}, {c[1]}: {walls[c][-1]:.1f} s", file=sys.stderr, flush=True)
        anchors = {s: anchoring(server, s, last[(s, "process-growing")][1]) for s in sets}
    prm = {s: [run_prm(s) for _ in range(args.repeats)] for s in sets}
    print(f"score-only templates, one digit constrained, cache order, concurrency 16, KV block "
          f"32; {args.repeats} repeats, interleaved; prefix cache reset before each run")  # fmt: skip
    header = (f"{'set':<19} {'mode':<16} {'req':>4} {'prompt tok':>10} {'prefilled':>9} "
              f"{'x outcome tok':>13} {'wall s min/med/max':>19} {'x outcome':>9} "
              f"{'rho vs prefix':>13} {'same':>5} {'first-error F1':>14}")  # fmt: skip
    print(header)
    for data in sets:
        base_cost = last[(data, "outcome")][0]
        base_wall = statistics.median(walls[(data, "outcome")])
        prefix = steps(last[(data, "process-prefix")][1])
        for mode in MODES:
            cost, batch = last[(data, mode)]
            rho, same = agreement(steps(batch), prefix) if mode != "outcome" else (np.nan, np.nan)
            f1 = (first_error_f1(batch, data.first_errors)
                  if data.first_errors is not None and mode != "outcome" else np.nan)  # fmt: skip
            print(
                f"{data.name:<19} {mode:<16} {cost.requests:>4} {cost.prompt:>10.0f} "
                f"{cost.computed:>9.0f} {cost.computed / base_cost.computed:>12.2f}x "
                f"{spread(walls[(data, mode)]):>19} "
                f"{statistics.median(walls[(data, mode)]) / base_wall:>8.2f}x "
                f"{rho:>13.2f} {same:>5.0%} {f1:>14.2f}"
            )
    for data, runs in prm.items():
        base = last[(data, "outcome")][0]
        wall = statistics.median(w for w, _, _ in runs)
        _, forwards, tokens = runs[-1]
        print(f"PRM (transformers, not the server), {data.name}: {forwards} forward passes, "
              f"{tokens} prompt tokens ({tokens / base.computed:.2f}x outcome's prefilled), "
              f"{spread([w for w, _, _ in runs])} s "
              f"({wall / statistics.median(walls[(data, 'outcome')]):.2f}x outcome)")  # fmt: skip
    for data, (shift, n) in anchors.items():
        print(f"anchoring, {data.name}: a planted answer to step k-1 moves step k's score "
              f"{shift:+.2f} points toward it ({n} steps asked again)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
