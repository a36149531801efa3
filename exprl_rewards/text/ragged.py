"""A ragged batch: rows of different lengths stored as one flat array plus lengths.

Process rewards have a different number of segments per rollout, and rollouts have a
different number of tokens. :class:`Ragged` keeps them flat so that every estimator is
a handful of numpy calls over the whole batch (no Python loop per rollout), and pads to
a ``[batch, width]`` matrix only at the edge, for a trainer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InputError

__all__ = ["Ragged"]


@dataclass(frozen=True, eq=False)
class Ragged:
    """Rows of varying length: ``values`` holds them end to end, ``lengths`` says how long.

    Args:
        values: 1-D array, the rows concatenated.
        lengths: 1-D non-negative int array, one entry per row; sums to ``len(values)``.

    >>> r = Ragged.from_rows([[1.0, 2.0], [], [3.0]])
    >>> r.lengths.tolist(), r.row_ids.tolist(), [row.tolist() for row in r.rows()]
    ([2, 0, 1], [0, 0, 2], [[1.0, 2.0], [], [3.0]])
    """

    values: npt.NDArray[Any]
    lengths: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        lengths = np.asarray(self.lengths, dtype=np.int64)
        if values.ndim != 1 or lengths.ndim != 1:
            raise InputError(
                f"Ragged needs 1-D values and lengths, got shapes {values.shape} and "
                f"{lengths.shape}"
            )
        if (lengths < 0).any() or int(lengths.sum()) != values.size:
            raise InputError(
                f"Ragged lengths must be >= 0 and sum to len(values) = {values.size}, "
                f"got sum {int(lengths.sum())}"
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "lengths", lengths)

    @classmethod
    def from_rows(
        cls, rows: Iterable[Sequence[Any] | npt.NDArray[Any]], dtype: npt.DTypeLike = np.float64
    ) -> Ragged:
        """Build from a list of rows. With a float dtype, ``None`` becomes NaN."""
        arrays = [np.asarray(row, dtype=dtype).reshape(-1) for row in rows]
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
        return cls(values, lengths)

    def __len__(self) -> int:
        return int(self.lengths.size)

    @property
    def starts(self) -> npt.NDArray[np.int64]:
        """Index in ``values`` where each row starts."""
        return np.cumsum(self.lengths) - self.lengths

    @property
    def row_ids(self) -> npt.NDArray[np.int64]:
        """For each entry of ``values``, the row it belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    @property
    def positions(self) -> npt.NDArray[np.int64]:
        """For each entry of ``values``, its index within its row."""
        return np.arange(self.values.size, dtype=np.int64) - np.repeat(self.starts, self.lengths)

    def with_values(self, values: npt.NDArray[Any]) -> Ragged:
        """Return a ragged array with the same row lengths and new values."""
        return Ragged(values, self.lengths)

    def rows(self) -> list[npt.NDArray[Any]]:
        """Return the rows as a list of arrays (views into ``values``)."""
        return np.split(self.values, np.cumsum(self.lengths)[:-1]) if len(self) else []

    def to_padded(
        self, fill: Any = np.nan, width: int | None = None
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Pad to a ``[rows, width]`` matrix.

        Args:
            fill: value of the padding.
            width: number of columns; defaults to the longest row. Must not be shorter.

        Returns:
            ``(matrix, mask)``, with ``mask`` True on real entries.
        """
        longest = int(self.lengths.max()) if len(self) else 0
        width = longest if width is None else width
        if width < longest:
            raise InputError(f"width {width} is shorter than the longest row ({longest})")
        # Rows are stored in order, so a boolean mask in row-major order addresses the
        # real entries exactly: no index arrays needed.
        mask = np.arange(width) < self.lengths[:, None]
        matrix = np.full((len(self), width), fill, dtype=self.values.dtype)
        matrix[mask] = self.values
        return matrix, mask
