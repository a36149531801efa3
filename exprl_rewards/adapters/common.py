"""What every trainer adapter shares: a number for an unscored rollout, said out loud.

Trainers that take ``None`` (TRL) get ``None``. Those that need a number for every
sample (verl, OpenRLHF) get a *neutral* one, and a flag that says it was filled in:

- ``"group-mean"`` (default): the mean score of the scored rollouts of the same prompt
  in the batch, so the filled rollout gets zero advantage under GRPO-style baselines;
  ``neutral`` when no rollout of the prompt was scored;
- a number: that value for every unscored rollout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from ..errors import ConfigError, JudgeUnavailable
from ..rewards.pipeline import RolloutResult

__all__ = ["UnscoredPolicy", "check_answered", "fill_unscored", "judge_raw", "judge_silence"]

UnscoredPolicy = Literal["group-mean"] | float
log = logging.getLogger("exprl_rewards")


def fill_unscored(
    results: Sequence[RolloutResult],
    policy: UnscoredPolicy = "group-mean",
    neutral: float = 0.5,
    group_scores: Mapping[str, Sequence[float]] | None = None,
) -> list[float]:
    """Each rollout's score, with unscored ones filled in by ``policy``.

    >>> from exprl_rewards.rewards.pipeline import RolloutResult
    >>> def r(score, group="q"):
    ...     reason = None if score is not None else "parse"
    ...     return RolloutResult("x", group, score, reason, None, ())
    >>> fill_unscored([r(1.0), r(0.5), r(None), r(None, "other")])
    [1.0, 0.5, 0.75, 0.5]
    >>> fill_unscored([r(1.0), r(None)], 0.0)
    [1.0, 0.0]

    ``group_scores``: every scored value of each group, where a group's rollouts are not
    all in ``results`` (a trainer that shards a group across processes).
    """
    if policy != "group-mean":
        try:
            value = float(policy)
        except (TypeError, ValueError):
            raise ConfigError(
                f"unscored policy must be 'group-mean' or a number, got {policy!r}"
            ) from None
        return [value if r.score is None else r.score for r in results]
    by_group: dict[str, list[float]] = {g: list(v) for g, v in (group_scores or {}).items()}
    if group_scores is None:
        for r in results:
            if r.score is not None:
                by_group.setdefault(r.group_id, []).append(r.score)
    return [
        r.score if r.score is not None else float(np.mean(by_group.get(r.group_id) or [neutral]))
        for r in results
    ]


def judge_raw(result: RolloutResult) -> float | None:
    """The judge's own last score (on its scale) of a scored rollout, else None."""
    raws = [s.raw for s in result.segments if s.raw is not None]
    return raws[-1] if raws and result.score is not None else None


def judge_silence(results: Sequence[RolloutResult]) -> tuple[RolloutResult, ...]:
    """The rollouts the judge never answered, when it answered *none* of those it was
    asked (a dead judge), else ``()``. Rollouts settled without a request (a guard's 0,
    an empty reference) do not count as answers: a dead judge behind a content gate is
    still dead.

    >>> judge_silence([])
    ()
    """
    asked = [r for r in results if r.judgements]
    failed = tuple(r for r in asked if r.backend_failed)
    return failed if asked and len(failed) == len(asked) else ()


def check_answered(results: Sequence[RolloutResult], trainer: str = "") -> None:
    """Log every rollout the judge never answered; raise when it answered none of those
    it was asked, so the trainer stops instead of training on filled-in values.

    Raises:
        JudgeUnavailable: naming the judge's error and where to look.
    """
    where = f" from {trainer}" if trainer else ""
    for r in results:
        if r.backend_failed:
            log.error("the judge never answered a sample%s: %s", where, r.reason)
    if silent := judge_silence(results):
        raise JudgeUnavailable(
            f"the judge answered none of {len(silent)} sample(s){where}: {silent[0].reason};"
            " check the judge's URL (EXPRL_JUDGE_BASE_URL) and its server"
        )
