"""``python -m exprl_rewards.audit --data NAME --out DIR``: measure a judge against labels.

Judges labelled rollouts through the same pipeline, prompts and cache as training,
fits calibrators on one split of the questions and reports on the other: ECE, Brier,
AUROC, accuracy, kappa, the judge-corrected pass rate, the ProcessBench metric for
step labels, parse failures, length and position bias, and prompt-injection success.
See :mod:`exprl_rewards.audit.report` for the files written.

The default template is the mode's score-only form: calibration is about the score
distribution, and a small judge rarely finishes a reasoning template with a score.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence

from ..audit.datasets import DATASETS, Labelled, load_dataset
from ..audit.hack_report import hack_report, write_hacks
from ..audit.report import write_report
from ..audit.run import AuditOptions, audit
from ..errors import ExpRLError, JudgeUnavailable
from ..io.jsonl import FieldMap
from ..judges.cache import JudgeCache
from ..judges.guards import get_guards
from ..judges.health import check_judge_sync, describe_judge
from ..judges.templates import MODES, Mode, template_named
from ..rewards.calibration import CALIBRATORS
from ..rewards.pipeline import RewardPipeline
from ..text.slicers import PRESETS
from .judge_args import add_judge_arguments, engine_log_of, make_judge
from .parser import ExpRLParser
from .summary import Progress

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = ExpRLParser(
        prog="python -m exprl_rewards.audit",
        description="Audit an LLM judge against labelled rollouts: calibration, bias, injection.",
    )
    p.add_argument(
        "--data",
        required=True,
        help=f"{', '.join(DATASETS)}, or jsonl:PATH (outcome labels in --label-field)",
    )
    p.add_argument(
        "--data-dir",
        help="folder of the built-in sets (default: $EXPRL_DATA, else the checkout's data/)",
    )
    p.add_argument("--label-field", default="correct", help="0/1 label field for jsonl:PATH")
    s = p.add_argument_group("step-labelled jsonl:PATH (see exprl_rewards.audit.datasets)")
    s.add_argument("--steps-field", metavar="PATH", help="a list of step strings per row")
    s.add_argument(
        "--first-error-field", metavar="PATH", help="index of the first wrong step (-1: none)"
    )
    s.add_argument(
        "--step-labels-field",
        metavar="PATH",
        help="one label per step: -1/0/1 ratings (PRM800K) or 0/1 (Math-Shepherd)",
    )
    s.add_argument(
        "--step-labels-scale",
        choices=["auto", "binary", "ternary"],
        default="auto",
        help="ternary: -1/0/1 ratings, the first -1 is wrong; binary: the first 0 is"
        " (default: auto, ternary when a -1 occurs)",
    )
    s.add_argument("--question-field", default="question", metavar="PATH")
    s.add_argument("--reference-field", default="reference", metavar="PATH")
    p.add_argument("--limit", type=int, help="audit a seeded sample of N questions")
    p.add_argument("-o", "--out", required=True, help="report folder")
    g = p.add_argument_group("what the judge grades")
    g.add_argument(
        "--mode",
        choices=MODES,
        help="default: process-prefix for step labels (process-tagged with --prm), outcome"
        " otherwise",
    )
    g.add_argument(
        "--template", help="a built-in or a .jinja file; default: the mode's score-only form"
    )
    g.add_argument(
        "--score-only",
        action="store_true",
        help="the --template file asks for the score alone (logprob scoring, constrained digits)",
    )
    g.add_argument(
        "--slicer",
        default="blank-line",
        choices=sorted(PRESETS),
        help="(default: blank-line, which gives back the labelled steps)",
    )
    a = p.add_argument_group("audit")
    a.add_argument("--calibrator", choices=CALIBRATORS, default="platt", help="(default: platt)")
    a.add_argument("--fit-fraction", type=float, default=0.5, help="(default: 0.5)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--threshold", type=float, default=0.5, help="(default: 0.5)")
    a.add_argument("--probes", type=int, default=50, help="injection probes (default: 50)")
    a.add_argument("--bootstrap", type=int, default=1000, help="resamples (default: 1000)")
    a.add_argument("--batch-size", type=int, default=64, help="samples per judge batch")
    a.add_argument(
        "--progress",
        choices=["auto", "on", "lines", "off"],
        default="auto",
        help="progress on stderr, sample by sample with the time left: on (a bar), lines"
        " (a plain line a second at most), auto (the bar on a terminal, else lines), off",
    )
    add_judge_arguments(p)
    h = p.add_argument_group("hack probes (exprl_rewards.audit.probes)")
    h.add_argument(
        "--hacks",
        action="store_true",
        help="also grade responses a policy could learn to game the judge (master keys,"
        " grader-directed text, padding...) against each question's right solution, without"
        " and with the default guards; writes HACKS.md, hacks.json and hacks.png",
    )
    h.add_argument(
        "--hacks-only",
        action="store_true",
        help="the hack probes alone (any mode; outcome labels suffice), no calibration",
    )
    h.add_argument(
        "--hack-questions",
        type=int,
        default=30,
        metavar="N",
        help="questions with a right and a wrong solution to build probes from (default: 30)",
    )
    p.set_defaults(guards="none")  # the audit measures the judge itself; --guards to add them
    return p


def _hacks(args: argparse.Namespace, pipeline: RewardPipeline, items: list[Labelled]) -> int:
    """Grade the hack probes, write and print the hack table."""
    start = time.perf_counter()
    hacks = hack_report(pipeline, items, questions=args.hack_questions, seed=args.seed,
                        bootstrap=args.bootstrap)  # fmt: skip
    if not hacks["runs"]["as given"]["questions"]:
        print(f"error: {args.data} has no question with both a right and a wrong solution,"
              " which the hack probes are built from", file=sys.stderr)  # fmt: skip
        return 2
    path = write_hacks(args.out, hacks)
    print(path.read_text(), end="")
    print(f"\nhack probes: {path} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        fields = FieldMap(question=args.question_field, reference=args.reference_field)
        items = load_dataset(
            args.data, args.data_dir, fields=fields, label_field=args.label_field,
            steps_field=args.steps_field, first_error_field=args.first_error_field,
            step_labels_field=args.step_labels_field, step_labels_scale=args.step_labels_scale,
        )  # fmt: skip
        if args.limit is not None:
            # A seeded sample of questions, not the first N: files are often sorted
            # (ProcessBench lists its erroneous traces first).
            groups = sorted(
                dict.fromkeys(i.rollout.group_id for i in items),
                key=lambda g: hashlib.sha256(f"limit:{args.seed}:{g}".encode()).digest(),
            )
            chosen = set(groups[: args.limit])
            items = [i for i in items if i.rollout.group_id in chosen]
        step_labels = all(i.step_labelled for i in items)
        process: Mode = "process-tagged" if args.prm else "process-prefix"  # a PRM: one pass
        mode: Mode = args.mode or (process if step_labels else "outcome")
        if args.prm and mode != "process-tagged":
            raise ExpRLError(
                f"--prm scores the steps of a rollout in one pass: it needs step labels and"
                f" --mode process-tagged, not {mode}"
            )
        if mode != "outcome" and not step_labels and not args.hacks_only:
            raise ExpRLError(f"--mode {mode} needs step labels; {args.data} has outcome labels")
        template = template_named(
            args.template or f"{mode}-score-only", mode=mode, score_only=args.score_only
        )
        cache = None if args.no_cache else JudgeCache(args.cache)
        judge = make_judge(args, cache)
        if not args.no_judge_check:
            check_judge_sync(judge)
        pipeline = RewardPipeline(
            judge, mode=mode, template=template, slicer=args.slicer,
            prefill=not args.no_prefill, min_mass=args.min_mass, guards=get_guards(args.guards),
        )  # fmt: skip
        options = AuditOptions(
            fit_fraction=args.fit_fraction, seed=args.seed, calibrator=args.calibrator,
            threshold=args.threshold, probes=args.probes, bootstrap=args.bootstrap,
            batch_size=args.batch_size,
        )  # fmt: skip
        if args.hacks_only:
            return _hacks(args, pipeline, items)
        meta = {
            "dataset": args.data,
            "limit": args.limit,
            "judge": f"{getattr(judge, 'backend', '?')}:{getattr(judge, 'model', '?')}",
            "template_name": pipeline.template.name,
        }
        progress = Progress(len(items), args.progress, unit="sample")
        try:
            report, samples, calibrators = audit(
                pipeline, items, options, meta=meta, progress=progress
            )
        finally:
            progress.close()
        if failed := report["parse"]["backend_failed"]:
            example = next(r for r in report["parse"]["reasons"] if r.startswith("backend:"))
            raise JudgeUnavailable(
                f"{failed} of {report['parse']['requests']} judge requests got no answer from"
                f" the {describe_judge(judge)} (e.g. {example}); a report would measure the"
                " outage, not the judge, so none was written. Fix the judge and rerun (the"
                " cache keeps what was answered)"
            )
    except JudgeUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ExpRLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, why in report["calibrators_refused"].items():
        print(f"warning: calibrator {name!r} not saved: {why}", file=sys.stderr)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    path = write_report(
        args.out, report, samples, calibrators, headline=args.calibrator,
        low=pipeline.template.low, high=pipeline.template.high,
    )  # fmt: skip
    print(path.read_text(), end="")
    print(f"\nreport: {path.parent}/ ({report['wall_s']} s)", file=sys.stderr)
    if args.hacks:
        return _hacks(args, pipeline, items)
    if (log := engine_log_of(pipeline.judge)) is not None:
        print(f"engine log (vLLM's own output; --verbose shows it): {log}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
