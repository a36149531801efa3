"""``python -m exprl_rewards.score IN.jsonl -o OUT.jsonl``: grade rollouts from a file.

Reads and validates every row first (exit code 2 on bad input, before any judge call;
``--on-error skip`` writes bad rows to a side file instead), then grades complete groups
a batch at a time and appends each finished row to the output, flushed. A rerun with the
same output skips rows already written (by id) and never writes one twice; a group that
was half written when the run died is removed and graded and written whole again
(:mod:`~exprl_rewards.cli.checks`). So a ``kill -9`` loses at most the batch in flight. The
output must be this tool's own, written with the same settings, and one run at a time
writes it (:mod:`exprl_rewards.cli.output`); anything else is refused untouched.

Before any judge call the judge must prove itself (:func:`~exprl_rewards.judges.health.check_judge`:
the server lists the model and answers a one-line request with a score); a judge that
cannot is an error (exit code 3) that writes nothing. A rollout the judge never answered
mid-run is not a result: its group is not written, a rerun grades it again, and the run
stops (exit code 3) once such rollouts pass ``--max-backend-failures`` of those graded.

Exit codes: 0 done; 1 a bad option or output; 2 bad input rows; 3 the judge failed;
130 interrupted. :func:`score` is the typed core (it raises, :func:`exit_code` maps);
:func:`main` parses the command line and prints the error.

Judges: the embedded default (SmolLM2-135M-Instruct on vLLM in this process, built on
first use), any OpenAI-compatible server (``--base-url``, ``--model``, key from
``$OPENAI_API_KEY`` or ``--api-key-env``), or a local vLLM model (``--vllm-model``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExpRLError, InputError, JudgeUnavailable
from ..io.jsonl import FieldMap, SourceRow, read_rollouts
from ..judges.health import check_judge_sync, describe_judge
from ..judges.progress import listening
from ..rewards.pipeline import BatchResult
from .build import AnyPipeline, build_pipeline, route_errors, run_settings, with_routes
from .checks import BadRows, check_resume, errors_file, skip_bad_rows
from .failures import BackendFailures
from .judge_args import engine_log_of, is_embedded
from .output import Output, check_output, check_side_files, open_output
from .records import input_digest, record
from .score_args import score_parser
from .summary import Progress, print_summary, summarize

__all__ = ["exit_code", "main", "score"]

EXIT_BAD_INPUT = 2
EXIT_JUDGE = 3
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
_RESUME = (
    "The rows written so far are kept; rerun the same command to grade the rest"
    " (a cut-off last row is repaired)"
)


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
    counts: tuple[int, int, int],
    failures: BackendFailures,
    start: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Print the summary, and write it as JSON when asked; the summary."""
    good, bad, resumed = counts
    summary = summarize(batches, good, bad, resumed, time.perf_counter() - start)
    summary["backend_failed"] = failures.failed
    summary["not_written"] = failures.withheld
    print_summary(summary, sys.stderr, output=args.output, embedded=is_embedded(args))
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _score_here(
    args: argparse.Namespace,
    pipeline: AnyPipeline,
    settings: dict[str, Any],
    batches: list[list[SourceRow]],
    output: Output,
    progress: Progress,
    failures: BackendFailures,
    results: list[BatchResult],
) -> None:
    """Grade ``batches`` in this process, one at a time; write each row not yet written,
    but no group that the judge did not fully answer (``failures``)."""
    for batch in batches:
        rollouts = [r.rollout for r in batch]
        progress.start_batch(sum(r.id not in output.done for r in rollouts))
        with listening(progress):
            result = pipeline.score_sync(rollouts)
        results.append(result)
        graded = []
        for row, res, (route, graded_by) in zip(
            batch, result.results, with_routes(pipeline, rollouts), strict=True
        ):
            data = dict(row.data)
            data[args.output_field] = record(
                res,
                graded_by,
                args.token_advantages,
                settings,
                route=route,
                digest=input_digest(row.rollout),
            )
            graded.append(data)
        kept = failures.keep(graded)
        written = [d for d in kept if d[args.output_field]["id"] not in output.done]
        output.write_rows(written)
        progress.update(len(written))
        failures.check()


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Run a scoring job from parsed options (:func:`~.score_args.score_parser`); return
    its summary (also printed to stderr, and written to ``--summary-json``).

    The typed core that :func:`main` and :func:`~exprl_rewards.cli.api.score_file` wrap.

    Raises:
        InputError: bad input rows (:class:`~.checks.BadRows`), an unreadable input, a
            changed row: nothing is graded.
        JudgeUnavailable: the judge failed its check, failures passed the limit, or the
            run ended with rows the judge never answered (not written; rerun).
        ExpRLError, OSError: a bad option or output, a failed write.
        KeyboardInterrupt: interrupted; what was written is kept.
    """
    start = time.perf_counter()
    # before any byte is written or any judge is called
    side_errors = errors_file(args) if args.on_error == "skip" else None
    check_side_files({"--summary-json": args.summary_json, "--errors-file": side_errors},
                     input_path=args.input, output_path=args.output)  # fmt: skip
    check_output(args.output, name=args.output_field, input_path=args.input)
    fields = FieldMap(**{name: getattr(args, f"{name}_field") for name in vars(FieldMap())})
    metadata = {"ability": args.ability_field, "extra_info": args.extra_info_field}
    rows, errors = read_rollouts(args.input, fields, reserved=args.output_field,
                                 metadata=metadata if args.route else None)  # fmt: skip
    if args.route:
        split = route_errors(rows, args.ability_field)
        bad = {(e.path, e.line) for e in split}
        rows, errors = [r for r in rows if (r.path, r.line) not in bad], errors + split
    if errors and args.on_error == "raise":
        raise BadRows(errors)
    try:
        pipeline = build_pipeline(args)
    except (InputError, OSError) as e:  # a template file that cannot be read: an option's
        raise ConfigError(str(e)) from e
    failures = BackendFailures(args.max_backend_failures, describe_judge(pipeline.judge),
                               args.output_field)  # fmt: skip
    if not args.no_judge_check and (not args.ray or hasattr(pipeline.judge, "check")):
        check_judge_sync(pipeline.judge)  # before anything is written
    if errors:  # the side file too: a run refused at start-up leaves nothing behind
        skip_bad_rows(errors, args)
    settings = run_settings(pipeline, args)
    output = open_output(args.output, name=args.output_field, settings=settings,
                         input_path=args.input)  # fmt: skip
    try:
        check_resume(rows, output, args)
    except BaseException:
        output.close()
        raise
    done = output.done
    pending_groups = {r.rollout.group_id for r in rows if r.rollout.id not in done}
    todo = [r for r in rows if r.rollout.group_id in pending_groups]
    progress = Progress(sum(r.rollout.id not in done for r in todo), args.progress)
    batches = list(_batches(todo, args.batch_size))
    results: list[BatchResult] = []
    stopped: JudgeUnavailable | None = None
    try:
        if args.ray:
            from .ray_score import score_on_ray

            score_on_ray(args, settings, batches, output, progress, failures, results)
        else:
            _score_here(args, pipeline, settings, batches, output, progress, failures, results)
    except JudgeUnavailable as e:  # the summary still tells what was done
        stopped = e
    finally:
        progress.close()
        with contextlib.suppress(OSError):  # a failed write is reported; a cut row repaired
            output.close()
    cache = getattr(pipeline.judge, "cache", None)
    if cache is not None and getattr(cache, "disabled", None):
        print(f"warning: the judge cache was turned off mid-run: {cache.disabled}", file=sys.stderr)
    summary = _report(results, (len(rows), len(errors), len(done)), failures, start, args)
    if (log := engine_log_of(pipeline.judge)) is not None:
        print(f"  engine log (vLLM's own output; --verbose shows it): {log}", file=sys.stderr)
    if stopped is not None:
        raise stopped
    if (message := failures.message()) is not None:
        raise JudgeUnavailable(message)
    return summary


def exit_code(error: BaseException) -> int:
    """The command's exit code for an error :func:`score` raised."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, JudgeUnavailable):
        return EXIT_JUDGE
    return EXIT_BAD_INPUT if isinstance(error, InputError) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = score_parser().parse_args(argv)
    try:
        score(args)
    except KeyboardInterrupt as e:
        print(f"\ninterrupted. {_RESUME}", file=sys.stderr)
        return exit_code(e)
    except OSError as e:  # the output's disk is full, or its folder went away
        print(f"error: cannot write {args.output}: {e.strerror or e}. {_RESUME}", file=sys.stderr)
        return 1
    except (ExpRLError, ValueError) as e:
        text = str(e)
        print(text if text.startswith("error: ") else f"error: {text}", file=sys.stderr)
        return exit_code(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
