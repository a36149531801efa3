"""Rows the judge never answered: kept out of the output, counted, and a stop past a limit.

A rollout whose judge request failed on the backend (unreachable, 5xx or timeouts after
retries, a redirect, a malformed body) has no verdict, so it is not a result. Its whole
group is held back from the output: its advantages were computed with that rollout
masked, and a rerun grades the group again (the judge cache answers what was already
judged) and writes it whole. The run goes on while such rollouts stay under
``--max-backend-failures`` (a share of the rollouts graded so far); past it, the run stops
with :class:`~exprl_rewards.errors.JudgeUnavailable`. A run that held anything back ends
with a non-zero exit that says to rerun.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..errors import ConfigError, JudgeUnavailable
from ..judges.health import is_backend_failure

__all__ = ["DEFAULT_MAX_BACKEND_FAILURES", "BackendFailures", "record_failed"]

# A judge that is down fails every request, far above this; a judge that drops a few
# requests under load (each already retried with backoff) stays below it.
DEFAULT_MAX_BACKEND_FAILURES = 0.1


def record_failed(record: dict[str, Any]) -> str | None:
    """The backend failure in one output record (rollout or any segment), or None."""
    reasons = [record.get("reason")] + [s.get("reason") for s in record.get("segments") or ()]
    return next((r for r in reasons if is_backend_failure(r)), None)


class BackendFailures:
    """Holds back the groups with a backend failure, and stops the run past the limit.

    Args:
        max_rate: the share of graded rollouts that may fail on the backend before the
            run stops (0: at the first; 1: never, but the run still ends non-zero).
        judge: the judge as messages name it.
        field: the output field that holds each row's record.
    """

    def __init__(self, max_rate: float, judge: str, field: str) -> None:
        if not 0 <= max_rate <= 1:
            raise ConfigError(f"--max-backend-failures is {max_rate:g}; give a share in [0, 1]")
        self.max_rate, self.judge, self.field = max_rate, judge, field
        self.graded = 0
        self.failed = 0  # rollouts that failed themselves
        self.withheld = 0  # rows held back (their whole groups)
        self.reasons: Counter[str] = Counter()

    def keep(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows to write: all but those of groups where a rollout failed on the backend."""
        failed_groups = set()
        for row in rows:
            reason = record_failed(row[self.field])
            if reason is not None:
                self.failed += 1
                self.reasons[reason] += 1
                failed_groups.add(row[self.field]["group_id"])
        self.graded += len(rows)
        kept = [r for r in rows if r[self.field]["group_id"] not in failed_groups]
        self.withheld += len(rows) - len(kept)
        return kept

    def check(self) -> None:
        """Raise :class:`JudgeUnavailable` when failures passed the limit."""
        if self.failed and self.failed > self.max_rate * self.graded:
            raise JudgeUnavailable(
                f"{self.failed} of {self.graded} rollouts graded so far got no answer from"
                f" the {self.judge} ({self.example()}), more than --max-backend-failures"
                f" {self.max_rate:g} allows; stopped. Rows already written are kept, and"
                " none of the failed ones was written: fix the judge, then rerun the same"
                " command to grade the rest"
            )

    def example(self) -> str:
        """The commonest failure, as a short phrase."""
        reason, n = self.reasons.most_common(1)[0]
        return f"{n}x {reason}"

    def message(self) -> str | None:
        """What to tell the user at the end of a run that held rows back, or None."""
        if not self.withheld:
            return None
        return (
            f"{self.failed} rollouts got no answer from the {self.judge} ({self.example()});"
            f" their groups ({self.withheld} rows) were not written. Rerun the same command"
            " to grade them; the rows written are kept"
        )
