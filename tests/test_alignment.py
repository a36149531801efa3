"""Token alignment: each token goes to the segment holding its first character."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exprl_rewards import AlignmentError, get_slicer, segment_token_ranges, token_segment_ids
from exprl_rewards.text.rollout import Segment

from test_slicers import slicers, texts


def reference_ids(segments: tuple[Segment, ...], starts: list[int]) -> list[int]:
    """Plain loop: the segment whose span holds the start (the last one for start == len)."""
    ids = []
    for start in starts:
        for seg in segments:
            if seg.start <= start < seg.end:
                ids.append(seg.index)
                break
        else:
            ids.append(segments[-1].index)
    return ids


@st.composite
def tokenized(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]]]:
    text = draw(texts.filter(bool))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=len(text))))
    bounds = [0, *[c for c in cuts if 0 < c < len(text)], len(text)]
    offsets = list(itertools.pairwise(bounds))
    if draw(st.booleans()):
        offsets.append((len(text), len(text)))  # EOS: no characters of its own
    return text, offsets


@given(slicer=slicers, case=tokenized())
def test_every_token_lands_in_the_segment_holding_its_first_character(slicer, case) -> None:  # type: ignore[no-untyped-def]
    text, offsets = case
    segments = slicer.split(text)
    ids = token_segment_ids(segments, offsets)
    starts = [s for s, _ in offsets]
    assert ids.tolist() == reference_ids(segments, starts)
    assert (np.diff(ids) >= 0).all()
    assert ids.min() >= 0
    assert ids.max() < len(segments)
    ranges = segment_token_ranges(segments, offsets)
    assert ranges.shape == (len(segments), 2)
    assert ranges[0, 0] == 0
    assert ranges[-1, 1] == len(offsets)
    assert (ranges[1:, 0] == ranges[:-1, 1]).all()  # contiguous
    for k, (lo, hi) in enumerate(ranges):
        assert (ids[lo:hi] == k).all()
    # Starts alone work as well as (start, end) pairs.
    assert token_segment_ids(segments, starts).tolist() == ids.tolist()


def test_straddling_tokens_on_a_real_processbench_trace(data_dir: Path) -> None:
    record = json.loads((data_dir / "step_labels" / "processbench" / "gsm8k.json").read_text())[0]
    text = "\n\n".join(record["steps"])
    segments = get_slicer("blank-line").split(text)
    # A BPE-like tokenizer that glues a blank line to the word after it: "\n\nTo".
    offsets = [m.span() for m in re.finditer(r"\s*\S+|\s+", text)]
    ids = token_segment_ids(segments, offsets)
    assert ids.tolist() == reference_ids(segments, [s for s, _ in offsets])
    for seg in segments[1:]:
        # The token that starts with the blank line ending segment k-1 belongs to k-1,
        # although most of its characters are in segment k.
        boundary_token = next(i for i, (s, e) in enumerate(offsets) if s < seg.start < e)
        assert ids[boundary_token] == seg.index - 1
        assert ids[boundary_token + 1] == seg.index
    ranges = segment_token_ranges(segments, offsets)
    assert ranges[:, 1].tolist()[-1] == len(offsets)
    assert len(segments) == len(record["steps"])


def test_hand_case_with_eos_and_empty_segment_range() -> None:
    segments = get_slicer("exprl").split("a### b")  # ['a###', ' b']
    # One token swallows the whole first segment and the space: segment 1 still gets "b".
    assert segment_token_ranges(segments, [(0, 5), (5, 6), (6, 6)]).tolist() == [[0, 1], [1, 3]]
    # A token that starts in segment 0 and covers all of segment 1: segment 1 gets none.
    assert segment_token_ranges(segments, [(0, 6)]).tolist() == [[0, 1], [1, 1]]


@pytest.mark.parametrize(
    ("segments", "offsets", "message"),
    [
        ((), [(0, 1)], "zero segments"),
        ((Segment(0, 1, 2, "b"),), [(1, 2)], "must be contiguous and start at 0"),
        ((Segment(0, 0, 2, "ab"),), [(0, 1), (3, 3)], r"must lie in \[0, 2\]"),
        ((Segment(0, 0, 2, "ab"),), [(1, 2), (0, 1)], "token 1 starts at 0, before token 0"),
        ((Segment(0, 0, 2, "ab"),), [[[0]]], "token offsets must be starts"),
    ],
)
def test_inconsistent_offsets_raise(
    segments: tuple[Segment, ...], offsets: object, message: str
) -> None:
    with pytest.raises(AlignmentError, match=message):
        token_segment_ids(segments, offsets)  # type: ignore[arg-type]
