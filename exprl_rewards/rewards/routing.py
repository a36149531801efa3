"""Per-row routing for mixed-domain training: each rollout to its domain's pipeline.

The paper's mixed-domain runs (math, science QA, code) grade some rows per step and the
rest per rollout, each domain with its own judge template. :class:`RoutedPipeline` holds
one :class:`~exprl_rewards.rewards.pipeline.RewardPipeline` per route, sends every rollout to the
route a function picks from the rollout, scores each route's rows together, and returns
the results in input order, as one pipeline would.

:func:`released_route` is the released rule (``_row_uses_process_reward``), read from the
rollout's ``metadata``: ``ability`` "math" -> ``"math"`` (process); "science" with
multiple-choice fields (``choices`` or ``answerKey`` in ``extra_info``) -> ``"science-mcq"``
(process); "science" otherwise -> ``"science"`` (outcome); "code" -> ``"code"`` (outcome);
anything else -> ``"other"`` (outcome, the released fallback).
:func:`released_routes` builds those pipelines around one judge.

Group advantages need a group's rollouts together: a group split across routes is an
error, not two half-groups.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, InputError
from ..judges.base import Judge, run_sync
from ..text.rollout import Rollout
from .pipeline import RewardPipeline
from .results import BatchResult, RolloutResult

__all__ = ["RoutedPipeline", "released_route", "released_routes", "route_problem"]

_DOMAINS = ("math", "science", "code")


def _extra_info(rollout: Rollout) -> Any:
    """``extra_info``, read from JSON when a dataset stored it as a string."""
    extra = rollout.metadata.get("extra_info")
    if isinstance(extra, str):
        try:
            return json.loads(extra)
        except json.JSONDecodeError:
            return extra
    return extra


def route_problem(rollout: Rollout) -> str | None:
    """Why the released rule cannot route this rollout as its data means, or None.

    The rule sends anything it does not know to outcome grading, so a domain spelt
    another way (``["math"]``, ``"math/algebra"``, a missing ``ability``) would silently
    lose its per-step grading: those are refused, with the fix. Case and surrounding
    spaces are normalised (``" Math"`` is math).

    >>> r = Rollout(id="1", group_id="g", question="q", reference="r", response="a",
    ...             metadata={"ability": "math/algebra"})
    >>> route_problem(r)[:64]
    "ability 'math/algebra' names a domain but is not one of math, sc"
    """
    if "ability" not in rollout.metadata:
        return "ability is missing: --route released reads each row's domain from it"
    ability = rollout.metadata["ability"]
    if not isinstance(ability, str):
        return f"ability {ability!r} is not a string such as 'math'"
    name = ability.strip().lower()
    if name not in _DOMAINS and any(d in name for d in _DOMAINS):
        return (
            f"ability {ability!r} names a domain but is not one of {', '.join(_DOMAINS)}:"
            " write it as one of those (a domain the released rule does not know is graded"
            " per rollout, as 'other')"
        )
    extra = _extra_info(rollout)
    if extra is not None and not isinstance(extra, Mapping):
        return f"extra_info is not an object (or a JSON string of one): {str(extra)[:60]!r}"
    return None


def released_route(rollout: Rollout) -> str:
    """The released routing rule, from ``metadata["ability"]`` and ``["extra_info"]``.

    >>> r = Rollout(id="1", group_id="g", question="q", reference="r", response="a",
    ...             metadata={"ability": "Science", "extra_info": {"choices": ["A", "B"]}})
    >>> released_route(r)
    'science-mcq'
    """
    ability = str(rollout.metadata.get("ability") or "").strip().lower()
    if ability in ("math", "code"):
        return ability
    if ability == "science":
        extra = _extra_info(rollout) or {}
        mcq = isinstance(extra, Mapping) and ("choices" in extra or "answerKey" in extra)
        return "science-mcq" if mcq else "science"
    return "other"


def released_routes(
    judge: Judge, *, score_only: bool = False, **options: Any
) -> dict[str, RewardPipeline]:
    """The released mixed-domain setup: process scoring for math and multiple-choice
    science, outcome scoring with a domain template for code, open science and the rest.

    Args:
        judge: the judge every route uses.
        score_only: use the templates' score-only forms.
        **options: passed to every :class:`RewardPipeline` (``truncated``, ``calibrator``...).
    """
    suffix = "-score-only" if score_only else ""

    def process() -> RewardPipeline:
        return RewardPipeline(
            judge, mode="process-segment", template=f"process-segment{suffix}", slicer="exprl",
            **options,
        )  # fmt: skip

    def outcome(template: str) -> RewardPipeline:
        return RewardPipeline(judge, mode="outcome", template=f"{template}{suffix}", **options)

    return {
        "math": process(),
        "science-mcq": process(),
        "science": outcome("science-outcome"),
        "code": outcome("code-outcome"),
        "other": outcome("outcome"),
    }


class RoutedPipeline:
    """Several pipelines behind one ``score``: each rollout goes to ``route(rollout)``.

    Args:
        routes: route name -> pipeline.
        route: picks a rollout's route (default: :func:`released_route`).

    A rollout whose route has no pipeline, or a group whose rollouts take different
    routes, raises :class:`~exprl_rewards.errors.InputError` naming the rollout.
    """

    def __init__(
        self,
        routes: Mapping[str, RewardPipeline],
        route: Callable[[Rollout], str] = released_route,
    ) -> None:
        if not routes:
            raise ConfigError("RoutedPipeline needs at least one route")
        self.routes, self.route = dict(routes), route

    @property
    def judge(self) -> Judge:
        """The first route's judge (:func:`released_routes` gives every route one judge)."""
        return next(iter(self.routes.values())).judge

    def assign(self, rollouts: Sequence[Rollout]) -> list[str]:
        """Each rollout's route, checked before any judge call."""
        names: list[str] = []
        of_group: dict[str, str] = {}
        for r in rollouts:
            name = self.route(r)
            if name not in self.routes:
                known = ", ".join(sorted(self.routes))
                raise InputError(f"rollout {r.id!r}: route {name!r} has no pipeline ({known})")
            if of_group.setdefault(r.group_id, name) != name:
                raise InputError(
                    f"rollout {r.id!r}: group {r.group_id!r} takes routes "
                    f"{of_group[r.group_id]!r} and {name!r}; a group's advantages need one"
                )
            names.append(name)
        return names

    async def score(self, rollouts: Sequence[Rollout]) -> BatchResult:
        """Score every route's rollouts with its pipeline; results in input order."""
        start = time.perf_counter()
        names = self.assign(rollouts)
        rows = {n: [i for i, m in enumerate(names) if m == n] for n in self.routes}
        rows = {n: index for n, index in rows.items() if index}
        batches = await asyncio.gather(  # the routes' judge calls overlap
            *(self.routes[n].score([rollouts[i] for i in index]) for n, index in rows.items())
        )
        results: list[RolloutResult | None] = [None] * len(rollouts)
        for index, batch in zip(rows.values(), batches, strict=True):
            for i, result in zip(index, batch.results, strict=True):
                results[i] = result
        done = [r for r in results if r is not None]
        if len(done) != len(rollouts):
            raise RuntimeError(f"routes returned {len(done)} results for {len(rollouts)} rollouts")
        return BatchResult(tuple(done), time.perf_counter() - start)

    def score_sync(self, rollouts: Sequence[Rollout]) -> BatchResult:
        """:meth:`score` from synchronous code (also inside a running event loop)."""
        return run_sync(lambda: self.score(rollouts))
