"""What a score run checks before it grades: bad rows, changed rows, half-written groups.

Each check raises an :class:`~exprl_rewards.errors.InputError` whose message names the
file and line and the way out, before any judge call; ``--on-error skip`` writes bad rows
to a side file instead (:func:`skip_bad_rows`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..io.jsonl import RowError, SourceRow
from .output import Output
from .records import input_digest

__all__ = ["BadRows", "check_resume", "errors_file", "skip_bad_rows"]


class BadRows(InputError):
    """Input rows that cannot be graded, each with its file, line and field."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        shown = "\n".join(f"error: {e}" for e in errors[:20])
        more = f" ({len(errors) - 20} more not shown)" if len(errors) > 20 else ""
        super().__init__(
            f"{shown}\n{len(errors)} bad input rows{more}; nothing was graded."
            " Fix them, or pass --on-error skip."
        )


def errors_file(args: argparse.Namespace) -> str:
    """Where ``--on-error skip`` writes bad rows."""
    if args.errors_file:
        return str(args.errors_file)
    return f"{args.output}.errors.jsonl" if args.output != "-" else "exprl-errors.jsonl"


def skip_bad_rows(errors: list[RowError], args: argparse.Namespace) -> None:
    """Write the bad rows, with their errors, to the side file (``--on-error skip``)."""
    side = Path(errors_file(args))
    side.parent.mkdir(parents=True, exist_ok=True)
    with side.open("w", encoding="utf-8") as f:
        for e in errors:
            row = {"path": e.path, "line": e.line, "field": e.field, "error": e.message,
                   "row": e.text.rstrip("\n")}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    print(f"skipped {len(errors)} bad input rows; they are in {side}", file=sys.stderr)


def check_resume(rows: list[SourceRow], output: Output, args: argparse.Namespace) -> None:
    """Refuse rows whose input changed since they were written; rewind a group the
    output holds in part (its rows are the file's last) so it is written whole again.

    Raises:
        InputError: a changed row (by file:line), or a part-written group that is not
            at the end of the output (the input gained rows in it).
    """
    changed = [
        f"error: {r.path}:{r.line}: row {r.rollout.id!r} is not the input its written score graded"
        for r in rows
        if output.digests.get(r.rollout.id, input_digest(r.rollout)) != input_digest(r.rollout)
    ]
    if changed:
        raise InputError(
            "\n".join(changed[:20]) + f"\n{len(changed)} rows changed since they were graded"
            f" into {args.output}; a resume would keep their old scores. Restore the input,"
            " or write to a new -o"
        )
    partial = _partial_groups(rows, output.done)
    if partial and not output.rewind(partial, args.output_field):
        raise InputError(
            f"{args.output} holds part of {len(partial)} rows' groups, not as its last"
            " rows: the input gained rows in groups already graded, whose advantages would"
            " no longer match. Write to a new -o"
        )


def _partial_groups(rows: list[SourceRow], done: set[str]) -> set[str]:
    """The written ids of groups that are written only in part."""
    written: dict[str, list[bool]] = {}
    for r in rows:
        written.setdefault(r.rollout.group_id, []).append(r.rollout.id in done)
    partial = {g for g, flags in written.items() if any(flags) and not all(flags)}
    return {r.rollout.id for r in rows if r.rollout.group_id in partial and r.rollout.id in done}
