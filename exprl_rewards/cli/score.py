"""``python -m exprl_rewards.score IN.jsonl -o OUT.jsonl``: grade rollouts from a file.

Reads and validates every row first (exit code 2 on bad input, before any judge call;
``--on-error skip`` writes bad rows to a side file instead), then grades complete groups
a batch at a time and appends each finished row to the output, flushed. A rerun with the
same output skips rows already written (by id) and never writes one twice; a group that
was half written when the run died is graded again (from the judge cache) and only its
missing rows are written. So a ``kill -9`` loses at most the batch in flight. The
output must be this tool's own, written with the same settings, and one run at a time
writes it (:mod:`exprl_rewards.cli.output`); anything else is refused untouched.

Judges: the embedded default (SmolLM2-135M-Instruct on vLLM in this process, built on
first use), any OpenAI-compatible server (``--base-url``, ``--model``, key from
``$OPENAI_API_KEY`` or ``--api-key-env``), or a local vLLM model (``--vllm-model``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..calibration import NORM_STRATEGIES
from ..errors import ExpRLError
from ..jsonl import FieldMap, RowError, SourceRow, read_rollouts
from ..pipeline import BatchResult
from ..slicers import PRESETS
from ..templates import MODES, TEMPLATES
from .build import AnyPipeline, build_pipeline, route_errors, run_settings, with_routes
from .judge_args import add_judge_arguments, engine_log_of
from .output import Output, open_output
from .records import record
from .summary import Progress, print_summary, summarize

__all__ = ["main"]

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exprl_rewards.score",
        description="Grade JSONL rollouts with an LLM judge against hidden references (ExpRL).",
    )
    p.add_argument(
        "input",
        help="JSONL rollouts (.jsonl, .jsonl.gz...), Parquet, a folder of them, a URI"
        " (s3://, gs://...), or - for standard input",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="JSONL output (appended, resumable), or - for standard output",
    )
    p.add_argument("--version", action="version", version=f"exprl-rewards {__version__}")
    g = p.add_argument_group("what to grade")
    g.add_argument("--mode", choices=MODES, help="(default: process-segment, as released)")
    g.add_argument(
        "--route",
        choices=["released"],
        help="grade each row by its domain, as the released mixed-domain trainer:"
        " process-segment ('###' steps) for ability math and multiple-choice science,"
        " outcome with a domain template for code, other science and the rest; reads each"
        " row's --ability-field and --extra-info-field",
    )
    g.add_argument(
        "--template",
        help=f"a built-in ({', '.join(TEMPLATES)}) or a .jinja file; default: the mode's",
    )
    g.add_argument(
        "--score-only",
        action="store_true",
        help="the --template file asks for the score alone (logprob scoring, constrained digits)",
    )
    g.add_argument(
        "--slicer",
        default="exprl",
        choices=sorted(PRESETS),
        help="step slicer for process modes (default: exprl, '###')",
    )
    g.add_argument(
        "--order",
        choices=["cache", "released"],
        default="cache",
        help="prompt section order (default: cache)",
    )
    g.add_argument(
        "--estimator", help="advantage estimator (default: grpo for outcome, delta for process)"
    )
    g.add_argument(
        "--calibration",
        metavar="FILE|STRATEGY",
        help="a calibrator saved by python -m exprl_rewards.audit, or a released norm_strategy: "
        + ", ".join(NORM_STRATEGIES)
        + " (default: (N - 1) / 4)",
    )
    g.add_argument(
        "--reduce",
        choices=["last", "mean", "min", "sum"],
        help="a process rollout's score from its step scores (default: last for "
        "process-prefix, mean for process-segment; sum: the released is_process_sum)",
    )
    g.add_argument(
        "--think-strip",
        action="store_true",
        help="grade only what follows the policy's last </think> (released think_strip)",
    )
    g.add_argument(
        "--truncated",
        choices=["zero", "judge", "unscored"],
        default="zero",
        help="rollouts cut at max length (default: zero, as released)",
    )
    f = p.add_argument_group("input fields (dotted paths, e.g. extra_info.solution)")
    for name, default in vars(FieldMap()).items():
        f.add_argument(
            f"--{name.replace('_', '-')}-field",
            default=default,
            metavar="PATH",
            help=f"(default: {default})",
        )
    f.add_argument("--ability-field", default="ability", metavar="PATH",
                   help="the row's domain, for --route (default: ability)")  # fmt: skip
    f.add_argument("--extra-info-field", default="extra_info", metavar="PATH",
                   help="multiple-choice fields (choices, answerKey), for --route"
                   " (default: extra_info)")  # fmt: skip
    add_judge_arguments(p)
    r = p.add_argument_group("run")
    r.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="rollouts per batch; whole groups are kept together (default: 64)",
    )
    r.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="bad input rows: stop with exit code 2, or skip them",
    )
    r.add_argument("--errors-file", help="where skipped rows go (default: OUTPUT.errors.jsonl)")
    r.add_argument("--summary-json", help="also write the summary as JSON here")
    r.add_argument(
        "--output-field",
        default="exprl",
        help="key under which results are added to each row (default: exprl)",
    )
    r.add_argument(
        "--token-advantages",
        action="store_true",
        help="write per-token advantages for rows with token offsets",
    )
    r.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar (auto: when stderr is a terminal)",
    )
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="grade on Ray Data: a local cluster, or the one at ADDRESS (pip install "
        "'exprl-rewards[ray]')",
    )
    r.add_argument("--ray-actors", type=int, default=2, help="judge actors on Ray (default: 2)")
    r.add_argument(
        "--ray-cpus", type=float, default=0.5, help="CPUs each Ray actor reserves (default: 0.5)"
    )
    r.add_argument(
        "--ray-gpus",
        type=float,
        default=0,
        help="GPUs each Ray actor reserves, for a judge in the actor (--vllm-model or the"
        " embedded one; default: 0)",
    )
    return p


def _batches(rows: list[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    groups: dict[str, list[SourceRow]] = {}
    for row in rows:
        groups.setdefault(row.rollout.group_id, []).append(row)
    batch: list[SourceRow] = []
    for group in groups.values():
        if batch and len(batch) + len(group) > size:
            yield batch
            batch = []
        batch.extend(group)
    if batch:
        yield batch


def _report(
    batches: list[BatchResult],
    good: int,
    bad: int,
    resumed: int,
    start: float,
    args: argparse.Namespace,
) -> int:
    """Print the summary (and write it as JSON when asked); the exit code."""
    summary = summarize(batches, good, bad, resumed, time.perf_counter() - start)
    print_summary(summary, sys.stderr)
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _report_bad_rows(errors: list[RowError], args: argparse.Namespace) -> int:
    if args.on_error == "raise":
        for e in errors[:20]:
            print(f"error: {e}", file=sys.stderr)
        more = f" ({len(errors) - 20} more not shown)" if len(errors) > 20 else ""
        print(
            f"{len(errors)} bad input rows{more}; nothing was graded."
            " Fix them, or pass --on-error skip.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    side = Path(
        args.errors_file
        or (f"{args.output}.errors.jsonl" if args.output != "-" else "exprl-errors.jsonl")
    )
    side.parent.mkdir(parents=True, exist_ok=True)
    with side.open("w", encoding="utf-8") as f:
        for e in errors:
            f.write(
                json.dumps(
                    {
                        "path": e.path,
                        "line": e.line,
                        "field": e.field,
                        "error": e.message,
                        "row": e.text.rstrip("\n"),
                    }
                )
                + "\n"
            )
    print(f"skipped {len(errors)} bad input rows; they are in {side}", file=sys.stderr)
    return 0


def _score_here(
    args: argparse.Namespace,
    pipeline: AnyPipeline,
    settings: dict[str, Any],
    batches: list[list[SourceRow]],
    output: Output,
    progress: Progress,
) -> list[BatchResult]:
    """Grade ``batches`` in this process, one at a time; write each row not yet written."""
    results = []
    for batch in batches:
        rollouts = [r.rollout for r in batch]
        result = pipeline.score_sync(rollouts)
        results.append(result)
        written = []
        for row, res, (route, graded_by) in zip(
            batch, result.results, with_routes(pipeline, rollouts), strict=True
        ):
            if res.id not in output.done:
                data = dict(row.data)
                data[args.output_field] = record(
                    res, graded_by, args.token_advantages, settings, route=route
                )
                written.append(data)
        output.write_rows(written)
        progress.update(len(written))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    fields = FieldMap(**{name: getattr(args, f"{name}_field") for name in vars(FieldMap())})
    try:
        metadata = {"ability": args.ability_field, "extra_info": args.extra_info_field}
        rows, errors = read_rollouts(args.input, fields, reserved=args.output_field,
                                     metadata=metadata if args.route else None)  # fmt: skip
    except ExpRLError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.route:
        split = route_errors(rows, args.ability_field)
        bad = {(e.path, e.line) for e in split}
        rows, errors = [r for r in rows if (r.path, r.line) not in bad], errors + split
    if errors and _report_bad_rows(errors, args):
        return EXIT_BAD_INPUT
    try:
        pipeline = build_pipeline(args)
        settings = run_settings(pipeline, args)
        if args.summary_json:
            Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        output = open_output(
            args.output, name=args.output_field, settings=settings, input_path=args.input
        )
    except (ExpRLError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    done = output.done
    pending_groups = {r.rollout.group_id for r in rows if r.rollout.id not in done}
    todo = [r for r in rows if r.rollout.group_id in pending_groups]
    progress = Progress(sum(r.rollout.id not in done for r in todo), args.progress)
    batches = list(_batches(todo, args.batch_size))
    try:
        if args.ray:
            from .ray_score import score_on_ray

            results = score_on_ray(args, settings, batches, output, progress)
        else:
            results = _score_here(args, pipeline, settings, batches, output, progress)
    except ExpRLError as e:  # e.g. --ray without ray installed
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        progress.close()
        output.close()
    cache = getattr(pipeline.judge, "cache", None)
    if cache is not None and getattr(cache, "disabled", None):
        print(f"warning: the judge cache was turned off mid-run: {cache.disabled}", file=sys.stderr)
    code = _report(results, len(rows), len(errors), len(done), start, args)
    if (log := engine_log_of(pipeline.judge)) is not None:
        print(f"  engine log (vLLM's own output; --verbose shows it): {log}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
