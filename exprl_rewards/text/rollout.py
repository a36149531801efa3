"""The values that flow through the pipeline: rollouts, segments and scores.

rollout -> slicer -> prompt -> judge -> parser -> calibration -> rewards -> advantages

- :class:`Rollout` is one policy response to one question, with the hidden human
  reference the judge grades it against. Rollouts of the same prompt share a
  ``group_id``; group statistics (GRPO, RLOO, GroupNorm) are taken over a group.
- :class:`Segment` is one slice of a response, with exact character offsets, so that
  ``"".join(s.text for s in segments) == response`` always holds.
- :class:`Score` is a judge's verdict: a value, or *unscored* with a reason. An unscored
  item is never a fake 0; in arrays it becomes NaN (see :func:`scores_to_array`).

All three are frozen dataclasses, checked on construction. Parsing JSONL rows into
rollouts (with file, line and field in the errors) is the I/O layer's job, not this one's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InputError

__all__ = ["GuardHit", "Rollout", "Score", "Segment", "scores_to_array"]


@dataclass(frozen=True)
class Rollout:
    """One on-policy response, with the question and the hidden reference solution.

    Args:
        id: unique id of this rollout.
        group_id: id of the prompt it answers; rollouts of one prompt form a group.
        question: the problem the policy saw.
        reference: the human reference solution. Only the judge sees it.
        response: the policy's response text.
        token_ids: the response's token ids, if known.
        token_offsets: ``(start, end)`` character offsets of each response token in
            ``response`` (Python ``str`` indices, not bytes). Starts must not decrease.
            A token with no characters of its own (e.g. EOS) has ``start == end``.
        truncated: True when the policy hit its length limit before finishing.
        metadata: free data carried along untouched (dataset name, sampling params...).

    >>> r = Rollout(id="r0", group_id="q0", question="1+1?", reference="2", response="2")
    >>> r.group_id
    'q0'
    """

    id: str
    group_id: str
    question: str
    reference: str
    response: str
    token_ids: tuple[int, ...] | None = None
    token_offsets: tuple[tuple[int, int], ...] | None = None
    truncated: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("id", "group_id", "question", "reference", "response"):
            if not isinstance(getattr(self, name), str):
                raise InputError(
                    f"rollout {self.id!r}: field {name!r} must be a str, "
                    f"got {type(getattr(self, name)).__name__}"
                )
        if self.token_ids is not None:
            object.__setattr__(self, "token_ids", tuple(int(t) for t in self.token_ids))
        if self.token_offsets is not None:
            offsets = tuple((int(s), int(e)) for s, e in self.token_offsets)
            object.__setattr__(self, "token_offsets", offsets)
            _check_offsets(offsets, len(self.response), where=f"rollout {self.id!r}")
            if self.token_ids is not None and len(self.token_ids) != len(offsets):
                raise InputError(
                    f"rollout {self.id!r}: {len(self.token_ids)} token_ids but "
                    f"{len(offsets)} token_offsets; give one (start, end) pair per token"
                )


def _check_offsets(offsets: Sequence[tuple[int, int]], n_chars: int, *, where: str) -> None:
    previous_start = 0
    for i, (start, end) in enumerate(offsets):
        if not 0 <= start <= end <= n_chars:
            raise InputError(
                f"{where}: token_offsets[{i}] = ({start}, {end}) is not a span of the "
                f"{n_chars}-character response; need 0 <= start <= end <= {n_chars}"
            )
        if start < previous_start:
            raise InputError(
                f"{where}: token_offsets[{i}] starts at {start}, before the previous "
                f"token ({previous_start}); offsets must be in text order (drop special "
                "tokens or give them the offset (len, len))"
            )
        previous_start = start


@dataclass(frozen=True)
class Segment:
    """One slice ``response[start:end]`` of a response.

    Args:
        index: position of the segment in its response, from 0.
        start: offset of its first character.
        end: offset just past its last character.
        text: exactly ``response[start:end]``.
    """

    index: int
    start: int
    end: int
    text: str

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end or self.end - self.start != len(self.text):
            raise InputError(
                f"segment {self.index}: span ({self.start}, {self.end}) does not match "
                f"its {len(self.text)}-character text"
            )


@dataclass(frozen=True)
class Score:
    """A judge's verdict on a rollout or a segment: a value, or unscored with a reason.

    Args:
        value: the score, usually normalised to [0, 1]; ``None`` when unscored.
        reason: why it is unscored (``"parse: no 'Score:' line"``, ``"timeout"``...).
            Required when ``value`` is None, and must be None otherwise.

    >>> Score(0.0).scored, Score.unscored("timeout").scored
    (True, False)
    """

    value: float | None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.value is None:
            if not self.reason:
                raise InputError("an unscored Score needs a reason (why it has no value)")
        else:
            if self.reason is not None:
                raise InputError(f"a Score with value {self.value!r} cannot have a reason")
            if not math.isfinite(self.value):
                raise InputError(
                    f"Score value must be finite, got {self.value!r}; "
                    "use Score.unscored(reason) for a missing score"
                )

    @classmethod
    def unscored(cls, reason: str) -> Score:
        """Return a Score with no value and the given reason."""
        return cls(None, reason)

    @property
    def scored(self) -> bool:
        """True when the score has a value."""
        return self.value is not None


def scores_to_array(scores: Iterable[Score | float | None]) -> npt.NDArray[np.float64]:
    """Turn scores into a float array, with NaN where a score is missing.

    Args:
        scores: :class:`Score` objects, floats, or None for missing scores.

    Returns:
        A 1-D float64 array; unscored items are NaN, never 0.

    >>> scores_to_array([Score(0.5), Score.unscored("timeout"), None, 1.0])
    array([0.5, nan, nan, 1. ])
    """
    values = [s.value if isinstance(s, Score) else s for s in scores]
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True)
class GuardHit:
    """A guard that fired on a rollout: its name, why, and the spans it acted on."""

    guard: str
    detail: str
    spans: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"guard": self.guard, "detail": self.detail, "spans": [list(s) for s in self.spans]}
