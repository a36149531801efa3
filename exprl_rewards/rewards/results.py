"""What the reward pipeline returns: per segment, per rollout, per batch.

A :class:`RolloutResult` is a rollout's reward (or why it has none), its segments'
scores and advantages, per-token advantages when the rollout came with token offsets,
and the judge's raw verdicts. A :class:`BatchResult` holds a batch's results in input
order, with totals and the released trainer's metrics (:meth:`BatchResult.summary`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..judges.base import Judgement
from ..judges.guards import GuardHit
from ..judges.health import is_backend_failure
from ..text.alignment import segment_token_ranges
from ..text.rollout import Rollout, Segment
from .batch_stats import training_metrics

__all__ = ["BatchResult", "RolloutResult", "SegmentResult", "rollout_result"]


@dataclass(frozen=True)
class SegmentResult:
    """One graded segment (outcome mode: the whole response as one segment).

    ``score`` is calibrated to [0, 1]; ``raw`` is on the judge's scale; ``advantage`` is
    None when the rollout is masked; ``tokens`` is the token range when offsets were given.
    """

    index: int
    start: int
    end: int
    score: float | None
    raw: float | None
    reason: str | None
    advantage: float | None
    tokens: tuple[int, int] | None = None


@dataclass(frozen=True)
class RolloutResult:
    """Everything the pipeline says about one rollout.

    Attributes:
        id, group_id: the rollout's.
        score: the rollout's reward in [0, 1]: the judge's score (outcome), or the
            reduction of its segment scores (process); None when unscored.
        reason: why it is unscored, else None.
        advantage: the outcome advantage (outcome mode), else None.
        segments: per-segment scores and advantages.
        token_advantages: one advantage per token when the rollout has token offsets
            (NaN where masked), else None.
        judgements: the judge's raw verdicts, in segment order.
        truncated: the rollout hit the policy's length limit.
        guards: the guards that fired on it, and why (:mod:`exprl_rewards.judges.guards`).
    """

    id: str
    group_id: str
    score: float | None
    reason: str | None
    advantage: float | None
    segments: tuple[SegmentResult, ...]
    token_advantages: np.ndarray | None = field(default=None, compare=False)
    judgements: tuple[Judgement, ...] = field(default=(), compare=False)
    truncated: bool = False
    guards: tuple[GuardHit, ...] = ()

    @property
    def backend_failed(self) -> bool:
        """A judge request of this rollout got no answer (not: an answer without a score)."""
        return any(is_backend_failure(j.reason) for j in self.judgements)


@dataclass(frozen=True)
class BatchResult:
    """The results of one batch, in input order, with totals."""

    results: tuple[RolloutResult, ...]
    wall_s: float
    extra: tuple[Judgement, ...] = ()  # judgements no rollout holds (a second look's)

    @property
    def unscored_reasons(self) -> Counter[str]:
        """How many rollouts are unscored, by reason."""
        return Counter(r.reason for r in self.results if r.reason is not None)

    def summary(self) -> dict[str, Any]:
        """Totals (rollouts, scored, unscored by reason, mean score, judge usage, time) and
        the released trainer's metrics
        (:func:`~exprl_rewards.rewards.batch_stats.training_metrics`)."""
        judgements = [j for r in self.results for j in r.judgements] + list(self.extra)
        scores = [r.score for r in self.results if r.score is not None]
        return {
            "rollouts": len(self.results),
            "scored": len(scores),
            "unscored": len(self.results) - len(scores),
            "unscored_reasons": dict(self.unscored_reasons.most_common()),
            "mean_score": float(np.mean(scores)) if scores else None,
            "judge_calls": sum(j.attempts for j in judgements),
            "judge_requests": sum(j.asked for j in judgements),
            "cache_hits": sum(j.cached and j.asked for j in judgements),
            "prompt_tokens": sum(j.prompt_tokens or 0 for j in judgements if not j.cached),
            "completion_tokens": sum(j.completion_tokens or 0 for j in judgements if not j.cached),
            "wall_s": round(self.wall_s, 3),
            "guards_fired": dict(Counter(h.guard for r in self.results for h in r.guards)),
            **training_metrics(self.results),
        }


def rollout_result(
    rollout: Rollout,
    segments: Sequence[Segment],
    scores: list[float],
    reasons: list[str | None],
    advantages: list[float],
    judgements: tuple[Judgement, ...],
    *,
    outcome: bool,
    reduce: str,
) -> RolloutResult:
    """A rollout's result from its segments' calibrated scores, reasons and advantages."""
    ranges = None
    token_adv = None
    if rollout.token_offsets is not None and segments:
        ranges = segment_token_ranges(segments, rollout.token_offsets)
        token_adv = np.repeat(np.array(advantages, dtype=np.float64), ranges[:, 1] - ranges[:, 0])
    raws = [j.score for j in judgements] if judgements else [None] * len(segments)
    seg_results = tuple(
        SegmentResult(
            index=s.index,
            start=s.start,
            end=s.end,
            score=None if np.isnan(score) else float(score),
            raw=raw,
            reason=reason,
            advantage=None if np.isnan(a) else a,
            tokens=(int(ranges[s.index, 0]), int(ranges[s.index, 1]))
            if ranges is not None
            else None,
        )
        for s, score, raw, reason, a in zip(
            segments, scores, raws, reasons, advantages, strict=True
        )
    )
    reason = next(
        (f"segment {i}: {x}" if not outcome else x for i, x in enumerate(reasons) if x),
        None,
    )
    if not segments:
        reason = "empty response"
    score = None
    if reason is None:
        values = [s.score for s in seg_results if s.score is not None]
        score = {"last": values[-1], "mean": float(np.mean(values)), "min": min(values),
                 "sum": float(np.sum(values))}[reduce]  # fmt: skip
    advantage = seg_results[0].advantage if outcome and seg_results else None
    return RolloutResult(
        id=rollout.id,
        group_id=rollout.group_id,
        score=score,
        reason=reason,
        advantage=advantage,
        segments=seg_results,
        token_advantages=token_adv,
        judgements=judgements,
        truncated=rollout.truncated,
    )
