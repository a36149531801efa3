"""What the score command tells its user: a progress bar and the run's summary."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..pipeline import BatchResult

__all__ = ["Progress", "print_summary", "summarize"]


class Progress:
    """A tqdm bar on stderr when asked (``on``) or when stderr is a terminal (``auto``)."""

    def __init__(self, total: int, mode: str) -> None:
        self.bar: Any = None
        if mode == "on" or (mode == "auto" and sys.stderr.isatty()):
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="rollout", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    """The summary as a few human lines."""
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
    print(
        f"  judge: {summary['judge_requests']} requests, {summary['judge_calls']} calls,"
        f" {summary['cache_hits']} answered without a call (cache or duplicate);"
        f" {summary['prompt_tokens']} prompt +"
        f" {summary['completion_tokens']} completion tokens; wall {summary['wall_s']:.1f} s",
        file=out,
    )
