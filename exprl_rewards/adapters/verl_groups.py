"""Unscored fills from the whole group, on verl's streaming reward path.

On verl 0.9's agent-loop path each response is scored as soon as its rollout finishes,
and the rollouts of one prompt finish at different times: a micro-batch rarely holds a
whole group. A scored response needs nothing from its group and is answered at once.
An unscored one gets its group's mean score (zero GRPO advantage), and that mean is
only right once the whole group has been judged, so :class:`GroupFill` holds its answer
until the group's ``size`` responses have been judged, or ``wait_s`` after the group's
first one (then from the responses judged so far, or ``neutral`` if none was scored).

A group is keyed by verl's ``extra_info["index"]`` (the prompt's row in the dataset).
Its state is dropped once ``size`` responses have been seen, so the same prompt in a
later step starts a new group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["GroupFill"]

Answer = Callable[[float], None]  # resolves one held response with its filled value


@dataclass
class _Group:
    seen: int = 0
    scores: list[float] = field(default_factory=list)
    held: list[Answer] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    expired: bool = False


class GroupFill:
    """Answer scored responses at once and unscored ones with their whole group's mean.

    Args:
        size: responses per prompt (verl's ``actor_rollout_ref.rollout.n``).
        wait_s: the longest an unscored response waits for the rest of its group.
        neutral: the value when no response of the group was scored.
    """

    def __init__(self, size: int, *, wait_s: float = 60.0, neutral: float = 0.5) -> None:
        if size < 1:
            raise ConfigError(f"group_size must be at least 1, got {size}")
        if wait_s <= 0:
            raise ConfigError(f"group_wait_s must be positive, got {wait_s}")
        self.size, self.wait_s, self.neutral = size, wait_s, neutral
        self.groups: dict[str, _Group] = {}
        self.expired = 0  # groups whose fill was given before they were whole

    def add(self, group_id: str, score: float | None, answer: Answer) -> None:
        """One judged response of ``group_id``: answered now if scored (or its group is
        already whole or expired), else held."""
        group = self.groups.setdefault(group_id, _Group())
        group.seen += 1
        if score is not None:
            group.scores.append(score)
            answer(score)
        elif group.expired:
            answer(self._mean(group))
        else:
            group.held.append(answer)
        if group.seen >= self.size:
            self._release(group)
            if group.timer is not None:
                group.timer.cancel()
            del self.groups[group_id]
        elif group.held and group.timer is None:
            loop = asyncio.get_running_loop()
            group.timer = loop.call_later(self.wait_s, self._expire, group_id)

    def _mean(self, group: _Group) -> float:
        return float(np.mean(group.scores)) if group.scores else self.neutral

    def _release(self, group: _Group) -> None:
        value = self._mean(group)
        for answer in group.held:
            answer(value)
        group.held.clear()

    def _expire(self, group_id: str) -> None:
        group = self.groups.get(group_id)
        if group is None:
            return
        self.expired += 1
        group.expired = True
        self._release(group)

    def state(self) -> dict[str, Any]:
        """Groups in flight and groups filled before they were whole (for tests, logs)."""
        return {"in_flight": len(self.groups), "expired": self.expired}
