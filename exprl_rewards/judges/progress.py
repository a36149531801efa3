"""Judge progress: who wants to know, as requests are sent and answered.

A long batch (64 rollouts, hundreds of step requests) would otherwise show no sign of
life until it ends. A caller that shows progress sets a listener around its work with
:func:`listening`; every backend reports :func:`asked` when a batch's requests (cache
misses only) go out and :func:`answered` as each one comes back, and nothing when no
one listens. The listener is a context variable, so it follows asyncio tasks and
``asyncio.to_thread`` and never crosses between unrelated runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol

__all__ = ["BatchProgress", "JudgeListener", "answered", "asked", "listening"]


class JudgeListener(Protocol):
    def asked(self, n: int) -> None: ...

    def answered(self, n: int) -> None: ...


class BatchProgress(JudgeListener, Protocol):
    """A listener that also hears of batches: ``start_batch(rows)`` before one is
    judged, ``update(rows)`` once its rows are done (``cli.summary.Progress``)."""

    def start_batch(self, rows: int) -> None: ...

    def update(self, n: int) -> None: ...


_listener: ContextVar[JudgeListener | None] = ContextVar("exprl_judge_listener", default=None)


@contextlib.contextmanager
def listening(listener: JudgeListener | None) -> Iterator[None]:
    """Report the judge requests made inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def asked(n: int) -> None:
    """``n`` requests went to the judge."""
    if n and (listener := _listener.get()) is not None:
        listener.asked(n)


def answered(n: int = 1) -> None:
    """``n`` requests came back from the judge (answered or failed)."""
    if n and (listener := _listener.get()) is not None:
        listener.answered(n)
