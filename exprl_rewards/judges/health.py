"""Is the judge there, and is an unscored answer the judge's verdict or its absence?

Two kinds of unscored judgement must never be confused:

- a **parse failure** (``"parse: no score line"``): the judge answered, and its answer
  holds no usable score. That is a result about the rollout, kept like a score;
- a **backend failure** (``"backend: connection error ..."``, a 5xx after retries, a
  timeout, a redirect, a malformed body): the judge never answered. That is no result
  at all. The score CLI does not write such a row (a rerun grades it again), stops when
  they pass a threshold, and the reward server answers 503 when a whole batch met one.

:func:`is_backend_failure` tells them apart, for a judgement's reason and for the
reasons a pipeline composes from it (``"segment 2: backend: timeout"``).

:func:`check_judge` asks a judge to prove itself before a run grades anything: a
backend with a ``check`` coroutine (:class:`~exprl_rewards.judges.openai.OpenAIJudge`:
``/v1/models`` must list the model, then one tiny score-only request must come back as a
well-formed answer; one without a score is a logged warning) raises
:class:`~exprl_rewards.errors.JudgeUnavailable` with the judge's address and the way
out; it returns what identifies the model behind the name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from ..errors import JudgeUnavailable
from .base import Judge, Judgement, JudgeRequest, run_sync, score_choices
from .templates import ChatMessage

__all__ = [
    "CHECK_REQUEST",
    "backend_failures",
    "check_judge",
    "check_judge_sync",
    "describe_judge",
    "is_backend_failure",
    "require_answered",
]

_log = logging.getLogger("exprl_rewards")
_BACKEND = re.compile(r"^(?:segment \d+: )?backend:")

# The cheapest request that shows a judge can grade: one score-only turn, a few tokens.
CHECK_REQUEST = JudgeRequest(
    messages=(
        ChatMessage(role="system", content="You grade answers on a scale of 1 to 5."),
        ChatMessage(
            role="user", content="Question: What is 2 + 2?\nAnswer: 4\nGive the score (1-5)."
        ),
    ),
    score_only=True,
    prefill="Score: ",
    template_id="judge-check",
    key="judge-check",
    max_tokens=8,
    choices=score_choices(1, 5),
)


def is_backend_failure(reason: str | None) -> bool:
    """Whether an unscored reason says the judge never answered (not that it answered
    without a score).

    >>> is_backend_failure("backend: connection error (refused)")
    True
    >>> is_backend_failure("segment 3: backend: timeout after 5 attempts")
    True
    >>> is_backend_failure("parse: no score line"), is_backend_failure(None)
    (False, False)
    """
    return reason is not None and _BACKEND.match(reason) is not None


def backend_failures(judgements: Iterable[Judgement]) -> list[Judgement]:
    """The judgements that failed on the backend."""
    return [j for j in judgements if is_backend_failure(j.reason)]


def describe_judge(judge: Any) -> str:
    """A judge as a message names it: backend, model and where it is served."""
    urls = [u for u in getattr(judge, "base_urls", ()) if u]
    where = f" at {', '.join(urls)}" if urls else ""
    return f"{getattr(judge, 'backend', '?')} judge {getattr(judge, 'model', '?')!r}{where}"


async def check_judge(judge: Judge) -> dict[str, Any]:
    """Check that ``judge`` can grade; return what identifies it.

    A backend with a ``check()`` coroutine runs its own check (a server's model list
    and a tiny request); any other judge grades :data:`CHECK_REQUEST`, which must come
    back answered (a missing score is a logged warning, see :func:`require_answered`).

    Raises:
        JudgeUnavailable: the judge cannot be reached or gives no score, with the
            judge's address and the way out in the message.
    """
    check = getattr(judge, "check", None)
    if callable(check):
        identity: dict[str, Any] = await check()
        return identity
    (judgement,) = await judge.judge([CHECK_REQUEST])
    require_answered(judge, judgement)
    return {"backend": getattr(judge, "backend", "?"), "model": getattr(judge, "model", "?")}


def check_judge_sync(judge: Judge) -> dict[str, Any]:
    """:func:`check_judge` from synchronous code."""
    return run_sync(lambda: check_judge(judge))


def require_answered(judge: Any, judgement: Judgement) -> None:
    """Raise :class:`JudgeUnavailable` unless the judge answered the check request.

    An answer without a score is only logged as a warning: whether a judge writes a
    score for a toy prompt says little about its answers to the run's template (a small
    model without an assistant prefill rarely does), and those show in the run's own
    unscored reasons.
    """
    if judgement.scored:
        return
    name = describe_judge(judge)
    if is_backend_failure(judgement.reason):
        raise JudgeUnavailable(
            f"the {name} cannot grade: {judgement.reason}. Nothing was graded. Start the"
            " judge, or point --base-url/--model at one that is running"
        )
    _log.warning(
        "the %s answered a one-line check request without a readable score (%s; it wrote"
        " %r): if its answers to the template have none either, every rollout will be"
        " unscored. A score-only template, or an assistant prefill, helps a small judge",
        name, judgement.reason, judgement.text[:120],
    )  # fmt: skip
