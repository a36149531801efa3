"""Step slicers: cut a response into the segments a process judge scores.

A slicer returns :class:`~exprl_rewards.text.rollout.Segment` objects with exact character
spans: the segments are contiguous, cover the whole text, and their texts joined give
back the input exactly. Nothing is stripped or dropped; whitespace always belongs to
some segment (the prompt layer decides what the judge sees).

Every slicer here is a :class:`RegexSlicer`: a pattern marks where segments end
(``cut="after"``: the match closes the previous segment, as the released ExpRL code
treats ``###``) or begin (``cut="before"``: the match opens the next one, as ``Step k:``
headings do). Then, in this order:

1. ``whitespace="attach"`` moves every cut forward past whitespace, so that each segment
   but the first starts with a visible character and a whitespace-only piece never stands
   alone (leading whitespace of the text joins the first segment). ``"keep"`` leaves the
   cuts where the pattern put them, whitespace-only segments included.
2. ``min_chars`` merges a segment with fewer visible (non-whitespace) characters into the
   segment before it, or into the one after it when it is the first.
3. ``max_segments`` merges the tail: segment ``max_segments - 1`` runs to the end.

Presets (:data:`PRESETS`, :func:`get_slicer`):

========================  =============================  ======  ==========  ===========
name                      boundary                       cut     whitespace  min / max
========================  =============================  ======  ==========  ===========
``exprl``                 ``###`` (released ExpRL)       after   keep        0 / none
``blank-line``            ``\\n\\n`` (Qwen PRMs)           after   attach      0 / none
``newline``               ``\\n``                         after   attach      0 / none
``step-heading``          ``Step k`` at a line start      before  attach      0 / none
``markdown-heading``      ``#``..``######`` heading line  before  attach      0 / none
========================  =============================  ======  ==========  ===========

``exprl`` keeps the released marker and policy (no whitespace policy, no minimum, no
cap) but cuts at characters; :class:`TokenMarkerSlicer` cuts at the released code's token
boundaries when the rollout has token offsets.
The other presets attach whitespace because a whitespace-only "step" is noise to a
judge and a wasted judge call. The empty string has no segments.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import ConfigError, unknown_name
from .rollout import Segment

__all__ = [
    "PRESETS",
    "RegexSlicer",
    "Slicer",
    "TokenMarkerSlicer",
    "delimiter_slicer",
    "get_slicer",
]

Cut = Literal["after", "before"]
Whitespace = Literal["keep", "attach"]


@runtime_checkable
class Slicer(Protocol):
    """Anything that cuts a response into contiguous, covering segments."""

    def split(self, text: str) -> tuple[Segment, ...]:
        """Return the segments of ``text``; their texts joined equal ``text``."""
        ...


@dataclass(frozen=True)
class RegexSlicer:
    """Cut text where a regular expression matches.

    Args:
        pattern: the boundary regex (use :func:`delimiter_slicer` for a literal string).
        cut: ``"after"``: a segment ends with the match; ``"before"``: a segment starts
            with the match.
        whitespace: ``"attach"`` (move cuts past whitespace) or ``"keep"``; see the
            module docs.
        min_chars: minimum visible characters per segment; shorter ones are merged into
            a neighbour. 0 disables merging.
        max_segments: at most this many segments; the tail is merged into the last one.
            None means no cap.
        flags: ``re`` flags for ``pattern``.

    Examples:
        >>> s = RegexSlicer(r"###", cut="after", whitespace="keep")
        >>> [seg.text for seg in s.split("a ### b ### c")]
        ['a ###', ' b ###', ' c']
    """

    pattern: str
    cut: Cut = "after"
    whitespace: Whitespace = "attach"
    min_chars: int = 0
    max_segments: int | None = None
    flags: int = 0
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.cut not in ("after", "before"):
            raise ConfigError(f"cut must be 'after' or 'before', got {self.cut!r}")
        if self.whitespace not in ("keep", "attach"):
            raise ConfigError(f"whitespace must be 'keep' or 'attach', got {self.whitespace!r}")
        if self.min_chars < 0:
            raise ConfigError(f"min_chars must be >= 0, got {self.min_chars}")
        if self.max_segments is not None and self.max_segments < 1:
            raise ConfigError(f"max_segments must be >= 1 or None, got {self.max_segments}")
        try:
            regex = re.compile(self.pattern, self.flags)
        except re.error as e:
            raise ConfigError(f"invalid slicer pattern {self.pattern!r}: {e}") from e
        object.__setattr__(self, "_regex", regex)

    def cuts(self, text: str) -> list[int]:
        """Return the interior cut offsets of ``text``, strictly increasing.

        A segment boundary lies at each returned offset; 0 and ``len(text)`` are implied.
        """
        n = len(text)
        at_end = self.cut == "after"
        cuts = sorted({m.end() if at_end else m.start() for m in self._regex.finditer(text)})
        cuts = [c for c in cuts if 0 < c < n]
        if self.whitespace == "attach":
            cuts = _attach_whitespace(text, cuts)
        if self.min_chars:
            cuts = _merge_short(text, cuts, self.min_chars)
        if self.max_segments is not None:
            cuts = cuts[: self.max_segments - 1]
        return cuts

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Return the ``(start, end)`` span of each segment of ``text``."""
        if not text:
            return []
        bounds = [0, *self.cuts(text), len(text)]
        return list(itertools.pairwise(bounds))

    def split(self, text: str) -> tuple[Segment, ...]:
        """Return the segments of ``text``; their texts joined equal ``text``."""
        return tuple(
            Segment(index=i, start=s, end=e, text=text[s:e])
            for i, (s, e) in enumerate(self.spans(text))
        )


def _attach_whitespace(text: str, cuts: list[int]) -> list[int]:
    n = len(text)
    moved: list[int] = []
    for c in cuts:
        while c < n and text[c].isspace():
            c += 1
        if c < n and (not moved or c > moved[-1]):
            moved.append(c)
    # Only the first piece can still be whitespace-only: every later one now starts
    # with a visible character. Merge it forward.
    if moved and text[: moved[0]].isspace():
        moved.pop(0)
    return moved


def _merge_short(text: str, cuts: list[int], min_chars: int) -> list[int]:
    bounds = [0, *cuts, len(text)]
    kept: list[int] = []  # the cuts that survive: starts of segments after the first
    first_done = False
    visible = 0
    for start, end in itertools.pairwise(bounds):
        piece = sum(not ch.isspace() for ch in text[start:end])
        if not first_done:
            # The first segment has no neighbour before it: grow it forward.
            visible += piece
            first_done = visible >= min_chars
        elif piece >= min_chars:
            kept.append(start)
        # Otherwise the piece is too short and folds into the segment before it.
    return kept


def delimiter_slicer(
    delimiter: str,
    *,
    cut: Cut = "after",
    whitespace: Whitespace = "attach",
    min_chars: int = 0,
    max_segments: int | None = None,
) -> RegexSlicer:
    """Return a slicer that cuts at every occurrence of a literal string.

    Args:
        delimiter: the literal boundary, e.g. ``"###"`` or ``"\\n\\n"``.
        cut, whitespace, min_chars, max_segments: as for :class:`RegexSlicer`.

    Examples:
        >>> [s.text for s in delimiter_slicer("\\n\\n").split("a\\n\\nb")]
        ['a\\n\\n', 'b']
    """
    if not delimiter:
        raise ConfigError("delimiter must be a non-empty string")
    return RegexSlicer(
        re.escape(delimiter),
        cut=cut,
        whitespace=whitespace,
        min_chars=min_chars,
        max_segments=max_segments,
    )


@dataclass(frozen=True)
class TokenMarkerSlicer:
    """The released ``_find_step_spans``: a step ends with the *token* that completes ``marker``.

    The released code decodes a window of tokens at every token and ends a step where the
    window's text ends with ``###``. With the rollout's token offsets
    (:meth:`split_tokens`, which the pipeline calls when a rollout has them) this cuts at
    the same tokens: a ``####`` token is one marker, and a token that holds ``###`` with
    more text after it (``###\\n``) is none. Without offsets :meth:`split` cuts at
    characters, as the ``exprl`` preset does. The released code's extra, empty last step
    (the end-of-sequence token alone, after a response ending in ``###``) is a bug and is
    not reproduced.

    >>> s = TokenMarkerSlicer()
    >>> [x.text for x in s.split_tokens("a ####b", [(0, 1), (1, 2), (2, 6), (6, 7)])]
    ['a ####', 'b']
    >>> [x.text for x in s.split_tokens("a ###\\nb", [(0, 1), (1, 2), (2, 6), (6, 7)])]
    ['a ###\\nb']
    """

    marker: str = "###"

    def split(self, text: str) -> tuple[Segment, ...]:
        """Character cuts after every ``marker`` (no token offsets to go by)."""
        return delimiter_slicer(self.marker, cut="after", whitespace="keep").split(text)

    def split_tokens(
        self, text: str, token_offsets: Sequence[tuple[int, int]]
    ) -> tuple[Segment, ...]:
        """Cut after each token at whose end the text so far ends with ``marker``."""
        n = len(text)
        cuts = sorted(
            {e for _, e in token_offsets if 0 < e < n and text.endswith(self.marker, 0, e)}
        )
        bounds = [0, *cuts, n] if text else []
        return tuple(
            Segment(index=i, start=a, end=b, text=text[a:b])
            for i, (a, b) in enumerate(itertools.pairwise(bounds))
        )


PRESETS: dict[str, RegexSlicer] = {
    "exprl": delimiter_slicer("###", cut="after", whitespace="keep"),
    "blank-line": delimiter_slicer("\n\n"),
    "newline": delimiter_slicer("\n"),
    "step-heading": RegexSlicer(
        r"^[ \t]*(?:[#*>]+[ \t]*)*step[ \t]*\d+", cut="before", flags=re.IGNORECASE | re.MULTILINE
    ),
    "markdown-heading": RegexSlicer(r"^#{1,6}[ \t]", cut="before", flags=re.MULTILINE),
}


def get_slicer(name: str, **overrides: Any) -> RegexSlicer:
    """Return the preset slicer ``name``, with options overridden.

    Args:
        name: a key of :data:`PRESETS`.
        **overrides: fields of :class:`RegexSlicer` to change, e.g. ``min_chars=20``.

    Examples:
        >>> [s.text for s in get_slicer("exprl").split("a ###\\nb")]
        ['a ###', '\\nb']
        >>> get_slicer("newline", max_segments=2).max_segments
        2
    """
    try:
        preset = PRESETS[name]
    except KeyError:
        raise unknown_name("slicer", name, sorted(PRESETS)) from None
    try:
        return dataclasses.replace(preset, **overrides)
    except TypeError as e:
        raise ConfigError(f"bad option for slicer {name!r}: {e}") from e
