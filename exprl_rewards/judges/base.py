"""What every judge backend takes and returns.

prompt -> :class:`JudgeRequest` -> backend -> :class:`~.verdict.RawOutput` ->
:func:`~.verdict.finish` -> :class:`Judgement`

A backend implements one coroutine, ``judge(requests) -> list[Judgement]``, returning one
judgement per request, in order. It never raises for one bad request: a request that
fails after retries, or whose output has no usable score, comes back *unscored* with a
reason. How a judge's answer becomes a score, for every backend and for cache hits
alike, is :mod:`~exprl_rewards.judges.verdict`'s. :func:`judge_sync` runs any judge from
plain code, including code that is itself running inside an event loop (trainers call
reward functions from their own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..text.rollout import Score
from .parsing import normalize_score
from .templates import ChatMessage, JudgeTemplate

__all__ = [
    "DEFAULT_MIN_MASS",
    "Judge",
    "JudgeRequest",
    "Judgement",
    "judge_sync",
    "run_sync",
    "score_choices",
    "unscored",
]

T = TypeVar("T")
# Enough for "3", "3/5" or "Score: 3" after a prefill; a score-only judge that rambles
# is cut here instead of spending the backend's full budget.
SCORE_ONLY_MAX_TOKENS = 8
# The probability the valid score tokens must hold at the score's token before the
# logprob-weighted value replaces the judge's written number. Below it the distribution
# says the judge was not choosing among scores there, and the written number stands.
DEFAULT_MIN_MASS = 0.5


def score_choices(low: int, high: int) -> tuple[str, ...]:
    """The answers a score-only template allows: each integer of the scale.

    >>> score_choices(1, 5)
    ('1', '2', '3', '4', '5')
    """
    return tuple(str(n) for n in range(low, high + 1))


@dataclass(frozen=True)
class JudgeRequest:
    """One judge call: the chat messages and how to read the answer.

    Args:
        messages: system and user messages (from :meth:`JudgeTemplate.render`).
        low, high: the score scale the prompt asks for.
        score_only: the prompt asks for the score alone (a bare number is accepted).
        prefill: text that starts the assistant's answer (e.g. ``"Score: "``), for
            backends that can continue a message; the next token is then the score.
        template_id: content hash of the template, part of the cache key.
        key: the caller's label (``"r17/step-3"``), carried into the judgement.
        min_mass: use the logprob-weighted score only when the valid score tokens
            hold at least this probability at the score's token; else the parsed
            number stands (:data:`DEFAULT_MIN_MASS`).
        max_tokens: a generation limit for this request (score-only templates need a
            few tokens); None: the backend's.
        choices: the only answers a score-only template allows (``"1"`` ... ``"5"``);
            a backend with ``constrain_scores`` decodes nothing else.
        scores: 0: the answer holds one score line (every mode but one); K >= 1: it is
            a list of K scores, one per step of a rollout judged in one request
            (``process-tagged``), and the judgement holds each in :attr:`Judgement.parts`.
        pattern: a regular expression the answer must match, for ``constrain_scores``
            (``[1-5]{4}`` for four steps); ``choices`` is used when empty.
        question, steps: a list request's question and step texts, for judges that read
            the steps rather than the prompt (a process reward model:
            :class:`~exprl_rewards.judges.prm.PRMJudge`).
    """

    messages: tuple[ChatMessage, ...]
    low: int = 1
    high: int = 5
    score_only: bool = False
    prefill: str = ""
    template_id: str = ""
    key: str = ""
    min_mass: float = DEFAULT_MIN_MASS
    max_tokens: int | None = None
    choices: tuple[str, ...] = ()
    scores: int = 0
    pattern: str = ""
    question: str = ""
    steps: tuple[str, ...] = ()

    @classmethod
    def from_template(
        cls,
        template: JudgeTemplate,
        *,
        key: str = "",
        prefill: bool = True,
        min_mass: float = DEFAULT_MIN_MASS,
        **variables: Any,
    ) -> JudgeRequest:
        """Render ``template`` with ``variables`` into a request.

        Args:
            template: the judge template.
            key: the caller's label for this request.
            prefill: use the template's assistant prefill, if it has one.
            min_mass: see the class.
            **variables: passed to :meth:`JudgeTemplate.render`.
        """
        return cls(
            messages=tuple(template.render(**variables)),
            low=template.low,
            high=template.high,
            score_only=template.score_only,
            prefill=template.prefill() if prefill else "",
            template_id=template.id,
            key=key,
            min_mass=min_mass,
            max_tokens=SCORE_ONLY_MAX_TOKENS if template.score_only else None,
            choices=score_choices(template.low, template.high) if template.score_only else (),
        )

    def cache_key(self, backend: str, model: str, sampling: dict[str, Any]) -> str:
        """A hash of everything that determines the judge's output."""
        blob = {
            "backend": backend,
            "model": model,
            "template": self.template_id,
            "messages": [[m["role"], m["content"]] for m in self.messages],
            "prefill": self.prefill,
            "max_tokens": self.max_tokens,
            "sampling": sampling,
        }
        if self.scores:  # only then: every other request keeps its key
            blob.update(scores=self.scores, pattern=self.pattern)
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one request.

    Attributes:
        score: the score on the request's scale: the logprob-weighted value when
            logprobs were available at the score token, else the parsed number; None
            when unscored.
        reason: why it is unscored, else None.
        parsed: the number read from the text, if any.
        expected, mass: the logprob-weighted score and the probability mass of the
            valid score tokens, when logprobs were available.
        probs: the probability of each score ``low..high`` at the score token (not
            renormalised), when logprobs were available; temperature calibration uses it.
        text: the judge's raw output (with the prefill in front).
        prompt_tokens, completion_tokens, cached_tokens: usage, when reported.
        latency_s: seconds from the first attempt to the answer (0 for a cache hit).
        backend, model: who judged.
        cached: served without a judge call: from the on-disk cache, or as a copy of an
            identical request in the same batch.
        attempts: calls made (retries included); 0 when cached.
        key: the request's key.
        low, high: the scale.
        parts: a request for a list of scores (``scores``): one judgement per score,
            in order (``score`` is then the last one's, or None if any is missing).
        asked: this judgement is a request of its own; False for the later scores of
            one answer and for steps never asked, whose requests, calls and tokens are
            counted elsewhere or not at all.
    """

    score: float | None
    reason: str | None
    parsed: float | None = None
    expected: float | None = None
    mass: float | None = None
    probs: tuple[float, ...] | None = None
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    latency_s: float = 0.0
    backend: str = ""
    model: str = ""
    cached: bool = False
    attempts: int = 0
    key: str = ""
    low: int = 1
    high: int = 5
    parts: tuple[Judgement, ...] = ()
    asked: bool = True

    @property
    def scored(self) -> bool:
        return self.score is not None

    def normalized(self) -> Score:
        """The score mapped to [0, 1] ((N - 1) / 4 on 1-5), or unscored with the reason."""
        if self.score is None:
            return Score.unscored(self.reason or "unscored")
        return Score(normalize_score(self.score, low=self.low, high=self.high))


def unscored(
    request: JudgeRequest, reason: str, *, backend: str, model: str, latency_s: float, attempts: int
) -> Judgement:
    """A judgement for a request the backend could not answer."""
    return Judgement(
        score=None,
        reason=reason,
        latency_s=latency_s,
        backend=backend,
        model=model,
        attempts=attempts,
        key=request.key,
        low=request.low,
        high=request.high,
    )


@runtime_checkable
class Judge(Protocol):
    """A judge backend: grades a batch of requests, one judgement per request, in order."""

    async def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """Return one :class:`Judgement` per request, in the same order."""
        ...


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    With no loop running this is ``asyncio.run``. Inside a running loop (a trainer's, a
    notebook's) ``asyncio.run`` would fail, so the coroutine runs on a fresh loop in a
    worker thread and this call blocks until it is done.
    """

    async def main() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        # in this thread's context, as asyncio.run would be (a progress listener)
        return pool.submit(contextvars.copy_context().run, asyncio.run, main()).result()


def judge_sync(judge: Judge, requests: Sequence[JudgeRequest]) -> list[Judgement]:
    """Run ``judge.judge(requests)`` from synchronous code (see :func:`run_sync`)."""
    return run_sync(lambda: judge.judge(requests))
