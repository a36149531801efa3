"""``python -m exprl_rewards.demo``: the paper's claim in miniature, in numpy.

Six experiments, every one over the same seeds (seed s: the same world for every method):

1. **race**: sparse-only against ExpRL-Outcome and ExpRL-Process (each estimator), Stage I
   with the method's reward then Stage II sparse, equal total updates.
2. **noise**: final pass@1 of outcome and of the race's best process estimator as the
   judge's noise grows, against sparse-only.
3. **flaws**: a harsh and a lenient (miscalibrated) judge, a length-biased one, and an
   exploitable one (a quirk token scores 5).
4. **segment**: the race again with the released math judge's semantics, each process
   step scored alone against the reference (step sizes tuned for it).
5. **repair**: the race in the repair world (irrelevant steps, mistakes that a later
   step can retract; :class:`~.world.World`) under both judges.
6. **mistakes** (not in ``--quick``): the repair world's race with prefix judges that
   weigh a pending mistake differently (``JudgeSim.pending_weight``).

Writes ``OUT/results.json``, ``OUT/findings.md`` and ``OUT/demo.png`` (with matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..cli.parser import ExpRLParser
from ..errors import MissingExtraError
from .race import CURVES, QUICK, DemoConfig, RunResult, run, tune
from .report import plot, summarise, table
from .rewards import METHODS
from .world import JudgeSim

Race = dict[str, list[RunResult]]  # method -> runs over seeds
Lrs = dict[str, float]  # method -> Stage I step size
NOISE = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
FLAWS = {
    "harsh": JudgeSim(gamma=3.0),
    "lenient": JudgeSim(gamma=1 / 3),
    "length-biased": JudgeSim(length_bias=1.5),
    "exploitable": JudgeSim(exploitable=True),
}
RACE_COLUMNS = {
    "unlocked_stage1": "unlocked, end of Stage I", "unlocked_final": "unlocked, end",
    "pass1_stage1": "pass@1, end of Stage I", "pass1": "final pass@1",
    "passk": "final pass@8", "pass1_vs_sparse": "pass@1 - sparse (paired)",
    "entropy_stage1": "entropy, end of Stage I",
}  # fmt: skip
FLAW_COLUMNS = {
    "reward_stage1": "own reward, end of Stage I", "quirk_stage1": "rollouts with the quirk",
    "pass1_stage1": "pass@1, end of Stage I", "pass1": "final pass@1",
    "pass1_vs_sparse": "pass@1 - sparse (paired)",
}  # fmt: skip
ALARM_COLUMNS = {
    "alarm_seeds": "canary alarm (share of seeds)", "alarm_step": "first canary alarm, step",
    "divergence_seeds": "divergence alarm (share)", "divergence_step": "first divergence, step",
    "pass1_peak_step": "Stage I pass@1 peak, step",
}  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ExpRLParser(
        prog="python -m exprl_rewards.demo",
        description="Sparse, outcome and process rewards race on a numpy testbed.",
    )
    p.add_argument("--quick", action="store_true", help="the short configuration (< 1 min)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--seeds", type=int, help="seeds per setting (default: 10; quick: 4)")
    p.add_argument("--no-plot", action="store_true", help="write no figure")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def experiments(config: DemoConfig, progress: bool) -> dict[str, Any]:
    """Tune, then run the experiments: experiment -> setting -> method -> runs."""
    seeds = range(config.seeds)
    process = [m for m in METHODS if m.startswith("process-")]
    weighed = len(config.pending_weights) * (len(METHODS) - 1)  # all but sparse again
    tuning = (2 * (len(METHODS) + len(process)) + weighed) * len(config.lr_grid) * config.tune_seeds
    per_seed = (2 * len(METHODS) + 2 * len(process) + 2 * (len(NOISE) - 1) + 2 * len(FLAWS)
                + weighed)  # fmt: skip
    # disable=None: no bar when stderr is not a terminal (no frames in a redirected log)
    off = None if progress else True
    bar = tqdm(desc="runs", unit="run", disable=off, total=tuning + config.seeds * per_seed)
    default = JudgeSim()

    def tick() -> None:
        bar.update(1)

    def runs(method: str, judge: JudgeSim, lrs: dict[str, float], cfg: DemoConfig = config
             ) -> list[RunResult]:  # fmt: skip
        out = [run(method, judge, seed, cfg, lr=lrs[method], stage_two_lr=lrs["sparse"])
               for seed in seeds]  # fmt: skip
        bar.update(len(out))
        return out

    def race_under(judge: JudgeSim, cfg: DemoConfig, shared: tuple[Race, Lrs] | None = None
                   ) -> tuple[Race, Lrs]:  # fmt: skip
        """The race under ``judge``; ``shared``: runs and step sizes of the methods this
        judge would not change (sparse's, and outcome's under the other semantics: they
        grade whole rollouts), from the same world."""
        if shared is None:
            lrs = tune(METHODS, judge, cfg, done=tick)
            return {m: runs(m, judge, lrs, cfg) for m in METHODS}, lrs
        done, known = shared
        rest = [m for m in METHODS if m not in done]
        lrs = {**known, **tune(rest, judge, cfg, done=tick, sparse_lr=known["sparse"])}
        return {m: done[m] if m in done else runs(m, judge, lrs, cfg) for m in METHODS}, lrs

    race, lrs = race_under(default, config)
    best = max(process, key=lambda m: sum(r.final["pass1"] for r in race[m]))
    dense = ("outcome", best)
    noise = {
        s: {m: race[m] if s == default.noise else runs(m, JudgeSim(noise=s), lrs) for m in dense}
        for s in NOISE
    }
    flaws = {name: {m: runs(m, judge, lrs) for m in dense} for name, judge in FLAWS.items()}
    segment_judge = replace(default, semantics="segment")
    whole = ({m: race[m] for m in ("sparse", "outcome")}, lrs)
    segment, segment_lrs = race_under(segment_judge, config, whole)
    repairs = replace(config, repairs=True)
    repair, repair_lrs = race_under(default, repairs)
    whole = ({m: repair[m] for m in ("sparse", "outcome")}, repair_lrs)
    repair_segment, repair_segment_lrs = race_under(segment_judge, repairs, whole)
    sparse_only = ({"sparse": repair["sparse"]}, repair_lrs)
    views = {default.pending_weight: (repair, repair_lrs)}
    for weight in config.pending_weights:
        views[weight] = race_under(replace(default, pending_weight=weight), repairs, sparse_only)
    bar.close()
    ordered = sorted(views.items(), reverse=True)  # a judge blind to mistakes first
    return {"race": race, "noise": noise, "flaws": flaws, "best_process": best, "lr": lrs,
            "segment": segment, "segment_lr": segment_lrs,
            "repair": {"prefix": repair, "segment": repair_segment},
            "repair_lr": {"prefix": repair_lrs, "segment": repair_segment_lrs},
            "mistakes": {w: r for w, (r, _) in ordered},
            "mistakes_lr": {w: lr for w, (_, lr) in ordered}}  # fmt: skip


def findings(results: dict[str, Any], config: DemoConfig) -> tuple[str, dict[str, Any]]:
    """The markdown tables and the JSON summary."""
    at, sparse = config.stage_one, results["race"]["sparse"]
    race = {m: summarise(r, at, sparse) for m, r in results["race"].items()}
    noise = {f"{m}, noise {s:g}": summarise(r, at, sparse)
             for s, by in results["noise"].items() for m, r in by.items()}  # fmt: skip
    flaws = {f"{m}, {name} judge": summarise(r, at, sparse)
             for name, by in results["flaws"].items() for m, r in by.items()}  # fmt: skip
    lrs = ", ".join(f"{m} {lr:g}" for m, lr in results["lr"].items())
    sparse_seg = results["segment"]["sparse"]
    segment = {m: summarise(r, at, sparse_seg) for m, r in results["segment"].items()}
    seg_lrs = ", ".join(f"{m} {lr:g}" for m, lr in results["segment_lr"].items())
    repair = {sem: {m: summarise(r, at, by["sparse"]) for m, r in by.items()}
              for sem, by in results["repair"].items()}  # fmt: skip
    repair_rows = {f"{m}, {sem} judge" if m.startswith("process-") else m: figures[m]
                   for m in METHODS for sem, figures in repair.items()}  # fmt: skip
    mistakes = {w: {m: summarise(r, at, by["sparse"]) for m, r in by.items() if m != "sparse"}
                for w, by in results["mistakes"].items()}  # fmt: skip
    mistake_rows = {f"{m}, pending mistake x{w:g}": figures[m] for m in METHODS[1:]
                    for w, figures in mistakes.items()}  # fmt: skip
    mistake_lrs = "; ".join(f"x{w:g}: " + ", ".join(f"{m} {lr:g}" for m, lr in lrs.items())
                            for w, lrs in results["mistakes_lr"].items())  # fmt: skip
    repair_lrs = "; ".join(f"{sem} judge: " + ", ".join(f"{m} {lr:g}" for m, lr in lrs.items())
                           for sem, lrs in results["repair_lr"].items())  # fmt: skip
    head = (f"{config.prompts} prompts x {config.group} rollouts, {config.steps} updates "
            f"({config.stage_one} Stage I), {config.seeds} seeds; mean [95% t-interval]. "
            f"Stage I step sizes, tuned on {config.tune_seeds} other seeds: {lrs} "
            f"(Stage II: sparse's).")  # fmt: skip
    text = "\n\n".join([
        f"## Race (judge noise 0.5)\n\n{head}\n\n" + table(race, RACE_COLUMNS),
        "## Judge noise\n\n" + table(noise, {k: RACE_COLUMNS[k] for k in
                                             ("unlocked_stage1", "pass1", "pass1_vs_sparse")}),
        "## Judge flaws\n\n" + table(flaws, FLAW_COLUMNS),
        "## Race with a segment judge (each step alone, as the released math judge)\n\n"
        f"The same seeds and worlds; process scores grade each step alone against its part"
        f" of the reference. Step sizes tuned for it: {seg_lrs}.\n\n"
        + table(segment, RACE_COLUMNS),
        "## Race in the repair world (irrelevant steps, mistakes that can be retracted)\n\n"
        f"New worlds from the same seeds, with filler and retract actions; both judges "
        f"(sparse and outcome grade whole rollouts: one row each). "
        f"Step sizes tuned for each: {repair_lrs}.\n\n" + table(repair_rows, RACE_COLUMNS),
        *([] if len(mistakes) < 2 else [
            "## A prefix judge's view of mistakes (repair world)\n\n"
            "What a prefix (or rollout) with a pending mistake is worth, as a share of the "
            "reference it established: x1 a judge blind to mistakes, x0 one that scores it "
            f"as nothing. Step sizes tuned for each: {mistake_lrs}.\n\n"
            + table(mistake_rows, {k: RACE_COLUMNS[k] for k in
                                   ("unlocked_stage1", "pass1", "pass1_vs_sparse")})]),
        "## The hack alarm in Stage I (canaries: 5% of the batch)\n\n"
        + table({**{f"{m}, default judge": race[m] for m in ("outcome", results["best_process"])},
                 **flaws}, ALARM_COLUMNS),
    ])  # fmt: skip
    mean_curves = {
        m: {c: [round(float(sum(r.curves[c][i] for r in runs) / len(runs)), 4)
                for i in range(config.steps)] for c in CURVES}
        for m, runs in results["race"].items()
    }  # fmt: skip
    summary = {"config": asdict(config), "lr": results["lr"],
               "best_process": results["best_process"], "race": race, "noise": noise,
               "flaws": flaws, "segment": segment, "segment_lr": results["segment_lr"],
               "repair": repair, "repair_lr": results["repair_lr"],
               "mistakes": {str(w): by for w, by in mistakes.items()},
               "mistakes_lr": {str(w): by for w, by in results["mistakes_lr"].items()},
               "race_mean_curves": mean_curves}  # fmt: skip
    return text, summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = QUICK if args.quick else DemoConfig()
    if args.seeds is not None:
        config = replace(config, seeds=args.seeds)
    start = time.perf_counter()
    results = experiments(config, progress=not args.no_progress)
    text, summary = findings(results, config)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "findings.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(text)
    if not args.no_plot:
        try:
            print(f"\nfigure: {plot(results, config.stage_one, args.out / 'demo.png')}")
        except MissingExtraError as e:
            print(f"\nno figure: {e}", file=sys.stderr)
    print(f"{time.perf_counter() - start:.1f} s; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
