"""Map segment character spans to response tokens, from the tokens' character offsets.

A trainer needs one advantage per token; a process judge gives one per segment. Given
where each token starts in the response text, every token is assigned to exactly one
segment: **the segment that holds the token's first character**. A token that straddles
a boundary (``"\\n\\n###"`` as one BPE token, say) therefore goes wholly to the segment it
starts in; a token with no characters of its own (EOS, offset ``(len, len)``) goes to the
segment holding that position, i.e. the last one. A segment shorter than a token can end
up with no tokens; its value then reaches no token.

This is one vectorised ``searchsorted`` over the token starts, O(T log K) for T tokens
and K segments. The released ExpRL code instead decodes the last 10 tokens at every
token to look for the delimiter, which costs a tokenizer call per token and misses
delimiters split across more than 10 tokens.

Offsets are Python ``str`` indices (code points), as produced by Hugging Face "fast"
tokenizers' ``offset_mapping``; convert byte offsets (tiktoken) first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ..errors import AlignmentError
from .rollout import Segment

__all__ = ["segment_token_ranges", "token_segment_ids"]

TokenStarts = Sequence[int] | Sequence[tuple[int, int]] | npt.NDArray[np.int64]


def _segment_starts(segments: Sequence[Segment]) -> tuple[npt.NDArray[np.int64], int]:
    if not segments:
        raise AlignmentError("cannot align tokens to zero segments (is the response empty?)")
    position = 0
    for seg in segments:
        if seg.start != position:
            raise AlignmentError(
                f"segment {seg.index} starts at {seg.start}, expected {position}: segments "
                "must be contiguous and start at 0 (use a slicer's output as is)"
            )
        position = seg.end
    return np.array([s.start for s in segments], dtype=np.int64), position


def _token_starts(token_offsets: TokenStarts, n_chars: int) -> npt.NDArray[np.int64]:
    starts = np.asarray(token_offsets, dtype=np.int64)
    if starts.ndim == 2 and starts.shape[1] == 2:
        starts = starts[:, 0]
    if starts.ndim != 1:
        raise AlignmentError(
            f"token offsets must be starts (T,) or (start, end) pairs (T, 2), got shape "
            f"{np.shape(token_offsets)}"
        )
    if starts.size:
        if starts.min() < 0 or starts.max() > n_chars:
            raise AlignmentError(
                f"token offsets must lie in [0, {n_chars}] (the segments' text length); "
                f"got [{starts.min()}, {starts.max()}]"
            )
        if (np.diff(starts) < 0).any():
            bad = int(np.flatnonzero(np.diff(starts) < 0)[0]) + 1
            raise AlignmentError(
                f"token {bad} starts at {starts[bad]}, before token {bad - 1} "
                f"({starts[bad - 1]}); token offsets must be in text order"
            )
    return starts


def token_segment_ids(
    segments: Sequence[Segment], token_offsets: TokenStarts
) -> npt.NDArray[np.int64]:
    """Return, for each token, the index of the segment that holds its first character.

    Args:
        segments: a slicer's output for the response.
        token_offsets: each token's start offset, or its ``(start, end)`` pair.

    Returns:
        An int64 array of length T, non-decreasing, values in ``[0, K)``.

    >>> from exprl_rewards.text.slicers import get_slicer
    >>> segs = get_slicer("blank-line").split("ab\\n\\ncd")
    >>> token_segment_ids(segs, [(0, 2), (2, 5), (5, 6)]).tolist()
    [0, 0, 1]
    """
    seg_starts, n_chars = _segment_starts(segments)
    starts = _token_starts(token_offsets, n_chars)
    return np.searchsorted(seg_starts, starts, side="right").astype(np.int64) - 1


def segment_token_ranges(
    segments: Sequence[Segment], token_offsets: TokenStarts
) -> npt.NDArray[np.int64]:
    """Return each segment's token range ``[first, last + 1)`` as a ``(K, 2)`` array.

    The ranges are contiguous and cover all T tokens; a segment with no tokens gets an
    empty range.

    >>> from exprl_rewards.text.slicers import get_slicer
    >>> segs = get_slicer("blank-line").split("ab\\n\\ncd")
    >>> segment_token_ranges(segs, [0, 2, 5]).tolist()
    [[0, 2], [2, 3]]
    """
    ids = token_segment_ids(segments, token_offsets)
    counts = np.bincount(ids, minlength=len(segments))
    ends = np.cumsum(counts)
    return np.stack([ends - counts, ends], axis=1).astype(np.int64)
