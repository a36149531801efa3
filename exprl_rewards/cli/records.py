"""One output row's ``exprl`` field: a rollout's result as the score CLI writes it.

Shared by the single-machine path and the Ray actors (:mod:`.ray_score`), so both write
byte-for-byte the same record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..rewards.pipeline import RewardPipeline
from ..rewards.results import RolloutResult
from ..text.rollout import Rollout

__all__ = ["input_digest", "record"]


def input_digest(rollout: Rollout) -> str:
    """A hash of what was graded (group, question, reference, response, length cut,
    token offsets, metadata the routes read): a resume compares it, so a row whose input
    changed since it was written is not taken as done."""
    blob = [rollout.group_id, rollout.question, rollout.reference, rollout.response,
            rollout.truncated, rollout.token_offsets, dict(rollout.metadata)]  # fmt: skip
    data = json.dumps(blob, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def record(
    result: RolloutResult,
    pipeline: RewardPipeline,
    with_tokens: bool,
    settings: dict[str, Any],
    route: str | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    """The result of one rollout, with the run's settings (see the score CLI's docs);
    ``route``: the pipeline that graded it, under ``--route``; ``digest``: the
    :func:`input_digest` of the rollout graded."""
    judgements = result.judgements
    masses = [j.mass for j in judgements] if judgements else [None] * len(result.segments)
    out: dict[str, Any] = {
        "id": result.id,
        "group_id": result.group_id,
        **({"input": digest} if digest is not None else {}),
        **({"route": route} if route is not None else {}),
        "mode": pipeline.mode,
        "score": result.score,
        "reason": result.reason,
        "advantage": result.advantage,
        "truncated": result.truncated,
        **({"guards": [h.to_dict() for h in result.guards]} if result.guards else {}),
    }
    if pipeline.mode != "outcome":
        out["segments"] = [
            {"index": s.index, "start": s.start, "end": s.end, "score": s.score, "raw": s.raw,
             "mass": mass, "reason": s.reason, "advantage": s.advantage,
             **({"tokens": list(s.tokens)} if s.tokens else {})}
            for s, mass in zip(result.segments, masses, strict=True)
        ]  # fmt: skip
    else:
        out["raw"] = result.segments[0].raw if result.segments else None
        out["mass"] = masses[0] if masses else None
    if with_tokens and result.token_advantages is not None:
        out["token_advantages"] = [None if a != a else a for a in result.token_advantages.tolist()]
    out["judge"] = {
        "template": pipeline.template.id,
        "model": judgements[0].model if judgements else None,
        "requests": sum(j.asked for j in judgements),
        "calls": sum(j.attempts for j in judgements),
        "cached": sum(j.cached and j.asked for j in judgements),
        "prompt_tokens": sum(j.prompt_tokens or 0 for j in judgements),
        "completion_tokens": sum(j.completion_tokens or 0 for j in judgements),
    }
    out["settings"] = settings
    return out
