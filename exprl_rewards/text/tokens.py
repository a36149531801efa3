"""From per-segment (or per-rollout) values to the per-token matrices a trainer consumes.

A trainer's loss wants ``[batch, response_length]`` advantages and a mask. Each token
takes its segment's value (``placement="all"``, as released: "each token gets its
segment's value"), or only a segment's last token carries it (``placement="last"``,
the layout of token-level reward tensors in verl and OpenRLHF).

Masked entries (padding, and every token of an unscored rollout) hold ``fill``
(default 0.0), *not* NaN, with ``mask`` False: a loss computed as ``(adv * mask)``
would turn NaN * 0 into NaN and poison the whole batch. The NaN-means-unscored
convention holds everywhere up to this edge; here the mask carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import InputError
from .ragged import Ragged

__all__ = ["TokenAdvantages", "broadcast_to_tokens"]

Placement = Literal["all", "last"]


@dataclass(frozen=True, eq=False)
class TokenAdvantages:
    """``[batch, width]`` per-token values and a mask, True on real, scored tokens."""

    values: npt.NDArray[np.float64]
    mask: npt.NDArray[np.bool_]


def broadcast_to_tokens(
    segment_values: Ragged | Sequence[Sequence[float]],
    tokens_per_segment: Ragged | Sequence[Sequence[int]],
    *,
    placement: Placement = "all",
    width: int | None = None,
    fill: float = 0.0,
) -> TokenAdvantages:
    """Spread per-segment values over tokens and pad to a batch matrix.

    Args:
        segment_values: one row per rollout, one value per segment; a row holding
            any NaN is treated as unscored and masked whole.
        tokens_per_segment: the same shape, the number of tokens in each segment
            (e.g. ``np.diff(segment_token_ranges(...), axis=1)``). An outcome score is
            the one-segment case: ``[[n_tokens]]`` per rollout.
        placement: ``"all"``: every token of a segment gets its value; ``"last"``: only
            its last token does, the others get 0 (a segment with no tokens is lost).
        width: number of columns (a trainer's max response length); defaults to the
            longest response.
        fill: value at masked positions.

    Returns:
        :class:`TokenAdvantages` with ``values`` and ``mask`` of shape ``[batch, width]``.

    >>> t = broadcast_to_tokens([[1.0, -1.0], [float("nan")]], [[2, 1], [2]])
    >>> t.values.tolist(), t.mask.tolist()
    ([[1.0, 1.0, -1.0], [0.0, 0.0, 0.0]], [[True, True, True], [False, False, False]])
    """
    values = (
        segment_values if isinstance(segment_values, Ragged) else Ragged.from_rows(segment_values)
    )
    counts = (
        tokens_per_segment
        if isinstance(tokens_per_segment, Ragged)
        else Ragged.from_rows(tokens_per_segment, dtype=np.int64)
    )
    if not np.array_equal(values.lengths, counts.lengths):
        raise InputError(
            "segment_values and tokens_per_segment must have the same rows and the same "
            f"number of segments per row; got {values.lengths.tolist()[:8]} vs "
            f"{counts.lengths.tolist()[:8]} (first 8 rows)"
        )
    n_tok = counts.values.astype(np.int64)
    if (n_tok < 0).any():
        raise InputError("tokens_per_segment must be >= 0")
    v = values.values.astype(np.float64)
    if placement == "all":
        token_values = np.repeat(v, n_tok)
    elif placement == "last":
        token_values = np.zeros(int(n_tok.sum()))
        ends = np.cumsum(n_tok)
        has = n_tok > 0
        token_values[ends[has] - 1] = v[has]
    else:
        raise InputError(f"placement must be 'all' or 'last', got {placement!r}")
    segment_row = values.row_ids
    tokens_per_row = np.bincount(segment_row, weights=n_tok, minlength=len(values))
    unscored = np.bincount(segment_row, weights=np.isnan(v), minlength=len(values)) > 0
    token_rows = Ragged(token_values, tokens_per_row.astype(np.int64))
    matrix, mask = token_rows.to_padded(fill=fill, width=width)
    mask[unscored] = False
    matrix[unscored] = fill
    return TokenAdvantages(matrix, mask)
