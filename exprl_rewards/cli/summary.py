"""What the score command tells its user: a progress bar and the run's summary."""

from __future__ import annotations

import io
import os
import sys
import time
from typing import Any, TextIO

from ..rewards.pipeline import BatchResult

__all__ = ["Progress", "print_summary", "summarize"]


class Progress:
    """How far a scoring run is, row by row, with the time left.

    Rows are written a batch at a time, but within a batch the judge's answers come one
    by one (:mod:`~exprl_rewards.judges.progress`), so the count moves with them: a
    batch's rows count as done in the share of its judge requests answered, and in full
    once written. ``mode``: ``on`` a tqdm bar; ``lines`` one plain line a second at most
    (for logs); ``auto`` the bar on a terminal, lines otherwise; ``off`` nothing.
    """

    def __init__(
        self,
        total: int,
        mode: str,
        *,
        stream: TextIO | None = None,
        unit: str = "rollout",
        interval: float = 1.0,
    ) -> None:
        self.total, self.unit, self.interval = total, unit, interval
        target = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "on" if target.isatty() else "lines"
        # a copy of the descriptor only when something will be shown
        self.stream, self._own = _terminal(target) if mode != "off" else (target, False)
        self.done = 0  # rows written
        self._batch = self._asked = self._answered = 0
        self._start = self._last = time.monotonic()
        self._shown = -1
        self.bar: Any = None
        self.lines = mode == "lines" and total > 0
        if mode == "on":
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=unit, file=self.stream, dynamic_ncols=True)
            except ImportError:
                self.lines = total > 0

    def start_batch(self, rows: int) -> None:
        """``rows`` rows not yet written are being graded now."""
        self._batch, self._asked, self._answered = rows, 0, 0

    def asked(self, n: int) -> None:  # a judge listener (judges.progress)
        self._asked += n

    def answered(self, n: int) -> None:
        self._answered += n
        self._show()

    def update(self, n: int) -> None:
        """``n`` rows were written."""
        self.done += n
        self._batch = self._asked = self._answered = 0
        self._show()

    @property
    def estimate(self) -> float:
        """Rows done, counting a batch in progress by its share of answered requests."""
        share = min(self._answered / self._asked, 0.99) if self._asked else 0.0
        return min(self.done + self._batch * share, self.total)

    def line(self) -> str:
        """The progress as one line: done, total, rate and time left."""
        done, elapsed = self.estimate, time.monotonic() - self._start
        text = f"progress: {int(done)}/{self.total} {self.unit}s ({int(100 * done / self.total)}%)"
        if done >= 1 and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.2f}/s, ~{(self.total - done) / rate:.0f} s left"
        return text

    def _show(self) -> None:
        if self.bar is not None:
            n = int(self.estimate)
            if n != self.bar.n:
                self.bar.update(n - self.bar.n)
        elif self.lines:
            now = time.monotonic()
            if now - self._last >= self.interval and int(self.estimate) != self._shown:
                self._last, self._shown = now, int(self.estimate)
                print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._own:
            self.stream.close()


def _terminal(stream: TextIO) -> tuple[TextIO, bool]:
    """Where progress goes: a copy of ``stream``'s file descriptor when it has one, so
    that the lines still reach the terminal while an in-process engine's output is sent
    to its log (``judges.logs.engine_output`` redirects the descriptor itself); else the
    stream. The second value says whether the copy is ours to close."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream, False
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace"), True


def summarize(
    batches: list[BatchResult], good: int, bad: int, resumed: int, wall: float
) -> dict[str, Any]:
    """The run's totals over its batches (rows, scored, unscored by reason, judge usage)."""
    parts = [b.summary() for b in batches]
    reasons: dict[str, int] = {}
    for part in parts:
        for reason, n in part["unscored_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    scored = sum(p["scored"] for p in parts)
    weighted = sum((p["mean_score"] or 0.0) * p["scored"] for p in parts)
    return {
        "rows": good + bad,
        "graded": sum(p["rollouts"] for p in parts),
        "already_done": resumed,
        "bad_rows_skipped": bad,
        "scored": scored,
        "unscored": sum(p["unscored"] for p in parts),
        "unscored_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "mean_score": weighted / scored if scored else None,
        "judge_requests": sum(p["judge_requests"] for p in parts),
        "judge_calls": sum(p["judge_calls"] for p in parts),
        "cache_hits": sum(p["cache_hits"] for p in parts),
        "prompt_tokens": sum(p["prompt_tokens"] for p in parts),
        "completion_tokens": sum(p["completion_tokens"] for p in parts),
        "wall_s": round(wall, 2),
    }


def print_summary(
    summary: dict[str, Any], out: TextIO, *, output: str | None = None, embedded: bool = False
) -> None:
    """The summary as a few human lines, ending with where the rows went and what next."""
    mean = summary["mean_score"]
    print(
        f"exprl-rewards: {summary['rows']} rows, {summary['graded']} graded now"
        f" ({summary['already_done']} already done,"
        f" {summary['bad_rows_skipped']} bad rows skipped);"
        f" scored {summary['scored']}, unscored {summary['unscored']};"
        f" mean score {'-' if mean is None else f'{mean:.3f}'}",
        file=out,
    )
    for reason, n in summary["unscored_reasons"].items():
        print(f"  unscored {n:>5}  {reason}", file=out)
    if summary["judge_calls"] == 0 and summary["cache_hits"]:
        usage = f"all {summary['cache_hits']} answers from the cache, no judge call"
    else:
        usage = (
            f"{summary['judge_requests']} requests, {summary['judge_calls']} calls,"
            f" {summary['cache_hits']} answered without a call (cache or duplicate);"
            f" {summary['prompt_tokens']} prompt + {summary['completion_tokens']} completion"
            " tokens"
        )
    print(f"  judge: {usage}; wall {summary['wall_s']:.1f} s", file=out)
    if embedded:
        print(
            "  note: the embedded judge (SmolLM2-135M) shows the pipeline working; it barely"
            " tells right from wrong (make audit measures it), so train with a real judge"
            " (--base-url, --model)",
            file=out,
        )
    if output and output != "-":
        print(
            f"  wrote {output}; next: pandas.read_json({output!r}, lines=True) reads it (the"
            " 'exprl' column: score, reward, advantage, steps); python -m exprl_rewards.audit"
            " measures the judge",
            file=out,
        )
