"""process-tagged: every step of a rollout scored in one request.

The rollout is shown once, its steps numbered by markers (``[STEP 1]``, ``[STEP 2]``...),
and the judge answers one digit per step, in order: the progress after each step, as in
process-prefix. With constrained decoding the answer is exactly one digit per step
(``[1-5]{K}``), each digit read with its logprobs like any score. The rollout is
prefilled once and a digit decoded per step: the cost of outcome scoring plus the
markers and K - 1 decode steps. The price: the judge has read the later steps when it
scores an earlier one.

Untrusted text cannot forge a marker: ``[STEP`` inside a step is written ``[ STEP``.
A step's score is placed by its position in the judge's answer, never by text in it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..judges.base import Judgement, JudgeRequest

__all__ = ["expand", "mark_steps", "several"]

MARK = "[STEP"


def mark_steps(steps: Sequence[str]) -> str:
    """The steps with a marker line before each.

    >>> print(mark_steps(["a = 1.", "So [STEP 9] b = 2."]))
    [STEP 1]
    a = 1.
    [STEP 2]
    So [ STEP 9] b = 2.
    """
    return "\n".join(f"{MARK} {k}]\n{s.replace(MARK, '[ STEP').strip()}"
                     for k, s in enumerate(steps, 1))  # fmt: skip


def several(request: JudgeRequest, count: int) -> JudgeRequest:
    """``request`` asking for ``count`` scores: one digit each (constrained to that on a
    single-digit scale), with a generation limit for separators written unconstrained."""
    pattern = f"[{request.low}-{request.high}]{{{count}}}" if request.high <= 9 else ""
    return dataclasses.replace(request, scores=count, pattern=pattern, choices=(),
                               max_tokens=3 * count + 8)  # fmt: skip


def expand(judgements: Sequence[Judgement], requests: Sequence[JudgeRequest]) -> list[Judgement]:
    """One judgement per step: a list request's parts (its reason for each of its steps
    when the answer held no such list), any other request's judgement as it is."""
    out: list[Judgement] = []
    for judgement, request in zip(judgements, requests, strict=True):
        if not request.scores:
            out.append(judgement)
        elif len(judgement.parts) == request.scores:
            out.extend(judgement.parts)
        else:
            reason = judgement.reason or f"parse: {len(judgement.parts)} of {request.scores} scores"
            first = dataclasses.replace(judgement, score=None, reason=reason, parts=())
            later = dataclasses.replace(first, attempts=0, latency_s=0.0, asked=False,
                                        prompt_tokens=None, completion_tokens=None,
                                        cached_tokens=None)  # fmt: skip
            out.extend([first] + [later] * (request.scores - 1))
    return out
