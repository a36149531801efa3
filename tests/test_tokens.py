"""Token broadcast and the ragged container."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exprl_rewards import InputError, Ragged, broadcast_to_tokens

rows = st.lists(
    st.lists(
        st.tuples(st.one_of(st.floats(-2, 2), st.just(math.nan)), st.integers(0, 4)), max_size=5
    ),
    max_size=6,
)


def reference(
    batch: list[list[tuple[float, int]]], placement: str, width: int
) -> tuple[np.ndarray, np.ndarray]:
    values = np.zeros((len(batch), width))
    mask = np.zeros((len(batch), width), dtype=bool)
    for i, row in enumerate(batch):
        if any(math.isnan(v) for v, _ in row):
            continue
        t = 0
        for v, n in row:
            for j in range(n):
                values[i, t] = v if placement == "all" or j == n - 1 else 0.0
                mask[i, t] = True
                t += 1
    return values, mask


@given(batch=rows, placement=st.sampled_from(["all", "last"]), extra=st.integers(0, 3))
def test_broadcast_matches_plain_loop(batch, placement, extra) -> None:  # type: ignore[no-untyped-def]
    width = max([sum(n for _, n in row) for row in batch], default=0) + extra
    got = broadcast_to_tokens(
        [[v for v, _ in row] for row in batch],
        [[n for _, n in row] for row in batch],
        placement=placement,
        width=width,
    )
    values, mask = reference(batch, placement, width)
    assert got.values.shape == got.mask.shape == (len(batch), width)
    assert np.array_equal(got.mask, mask)
    assert np.array_equal(got.values, values)
    assert not np.isnan(got.values).any()  # masked entries are filled, never NaN


def test_fill_and_too_narrow_width() -> None:
    got = broadcast_to_tokens([[1.0], [math.nan]], [[2], [1]], fill=-9.0)
    assert got.values.tolist() == [[1.0, 1.0], [-9.0, -9.0]]
    with pytest.raises(InputError, match="shorter than the longest row"):
        broadcast_to_tokens([[1.0]], [[3]], width=2)


def test_shape_mismatch_and_bad_placement_raise() -> None:
    with pytest.raises(InputError, match="same number of segments per row"):
        broadcast_to_tokens([[1.0, 2.0]], [[1]])
    with pytest.raises(InputError, match="placement must be"):
        broadcast_to_tokens([[1.0]], [[1]], placement="first")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=">= 0"):
        broadcast_to_tokens([[1.0]], [[-1]])


@given(st.lists(st.lists(st.floats(-5, 5), max_size=5), max_size=6))
def test_ragged_round_trips(batch: list[list[float]]) -> None:
    r = Ragged.from_rows(batch)
    assert [row.tolist() for row in r.rows()] == batch
    padded, mask = r.to_padded(fill=0.0)
    assert mask.sum() == sum(map(len, batch))
    assert padded[mask].tolist() == [x for row in batch for x in row]
    assert r.positions.tolist() == [j for row in batch for j in range(len(row))]


def test_ragged_rejects_inconsistent_lengths() -> None:
    with pytest.raises(InputError, match="sum to len"):
        Ragged(np.zeros(3), np.array([1, 1]))
    with pytest.raises(InputError, match="1-D"):
        Ragged(np.zeros((2, 2)), np.array([2, 2]))
    assert Ragged.from_rows([[None, 1.0]]).values.tolist()[1] == 1.0
    assert math.isnan(Ragged.from_rows([[None]]).values[0])
