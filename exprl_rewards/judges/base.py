"""What every judge backend takes and returns, and the parsing they share.

prompt -> :class:`JudgeRequest` -> backend -> :class:`RawOutput` -> :func:`finish`
-> :class:`Judgement`

:func:`finish` is the one place where a judge's answer becomes a score, for every
backend and for cache hits alike:

- **the text decides**: the score is the number on the judge's last score line
  (:func:`~exprl_rewards.judges.parsing.parse_score`, which ignores text echoed from the
  request's own fences); an answer the parser rejects is unscored with the parser's
  reason, whatever the logprobs say;
- **logprobs refine**: when the token holding that number has top logprobs, the score
  becomes the expected value over the valid score tokens there, if they hold at least
  ``min_mass`` of the probability (:data:`DEFAULT_MIN_MASS`); below it the parsed
  number stands. The mass is reported either way;
- **malformed answers are unscored**: content that is not a string, logprobs that are
  not log probabilities (:meth:`RawOutput.problem`), and logprobs that contradict the
  text: a chosen token whose logprob differs from its own entry in the top list, or
  that is absent from the list yet likelier than its last entry (a server that mixed
  up tokens or positions; :func:`logprob_conflict`). Backends check an answer before
  they cache it, and a cached answer that fails the check is a miss;
- **a judge cut inside its reasoning** (``finish_reason == "length"`` with a ``<think>``
  never closed) is unscored: a score line in there is a draft, not a verdict.

A backend implements one coroutine, ``judge(requests) -> list[Judgement]``, returning one
judgement per request, in order. It never raises for one bad request: a request that
fails after retries, or whose output has no usable score, comes back *unscored* with a
reason. :func:`judge_sync` runs any judge from plain code, including code that is
itself running inside an event loop (trainers call reward functions from their own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..text.rollout import Score
from . import progress
from .parsing import (
    ParsedScore,
    normalize_score,
    parse_score,
    parse_step_scores,
    prompt_fences,
    score_distribution,
    untrusted_score_lines,
)
from .templates import ChatMessage, JudgeTemplate

__all__ = [
    "DEFAULT_MIN_MASS",
    "CachedBatch",
    "Judge",
    "JudgeRequest",
    "Judgement",
    "RawOutput",
    "TokenLogprobs",
    "finish",
    "judge_sync",
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
class TokenLogprobs:
    """One generated token: its text, its logprob, and the top alternatives there."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    nbytes: int | None = None  # length in UTF-8 bytes, when the backend says


def _is_logprob(value: object, *, chosen: bool = False) -> bool:
    """A real number <= 0 (up to rounding), or -inf; NaN only for a chosen token that a
    backend could not look up (vLLM), never among the alternatives that are scored."""
    if type(value) not in (int, float):
        return False
    x = float(value)  # type: ignore[arg-type]
    if math.isnan(x):
        return chosen
    return x <= 1e-3


# Logprobs of one token from one forward pass agree to rounding; servers print ~6 digits.
_LOGPROB_TOLERANCE = 1e-3


def logprob_conflict(t: TokenLogprobs) -> str | None:
    """Why a token's logprob contradicts its own top list, or None.

    >>> logprob_conflict(TokenLogprobs("1", -0.01, (("5", -0.01), ("1", -4.6))))
    "chosen '1' has logprob -0.01 but -4.6 in the top list"
    >>> logprob_conflict(TokenLogprobs("1", -0.01, (("5", -0.5), ("4", -1.0))))
    "chosen '1' (logprob -0.01) is missing from a top list whose last entry is -1"
    """
    if not t.top or math.isnan(t.logprob):
        return None
    listed = [lp for token, lp in t.top if token == t.token]
    if listed and all(abs(lp - t.logprob) > _LOGPROB_TOLERANCE for lp in listed):
        return f"chosen {t.token!r} has logprob {t.logprob:.3g} but {listed[0]:.3g} in the top list"
    lowest = min(lp for _, lp in t.top)
    if not listed and t.logprob > lowest + _LOGPROB_TOLERANCE:
        return (
            f"chosen {t.token!r} (logprob {t.logprob:.3g}) is missing from a top list"
            f" whose last entry is {lowest:.3g}"
        )
    return None


@dataclass(frozen=True)
class RawOutput:
    """What a backend got back for one request, before any parsing."""

    text: str
    tokens: tuple[TokenLogprobs, ...] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None

    def problem(self) -> str | None:
        """Why this is not a well-formed answer (wrong types, impossible logprobs), or None.

        >>> RawOutput(text=7).problem()  # type: ignore[arg-type]
        'content is int, not a string'
        >>> RawOutput("Score: 4", (TokenLogprobs("4", 5e300),)).problem()
        'token 0: logprob 5e+300 is not a log probability'
        """
        if not isinstance(self.text, str):
            return f"content is {type(self.text).__name__}, not a string"
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                return f"usage {name} is {value!r}, not a count"
        if self.finish_reason is not None and not isinstance(self.finish_reason, str):
            return f"finish_reason is {type(self.finish_reason).__name__}, not a string"
        if self.tokens is None:
            return None
        if not isinstance(self.tokens, tuple):
            return f"logprobs are {type(self.tokens).__name__}, not a sequence"
        for i, t in enumerate(self.tokens):
            if not isinstance(t, TokenLogprobs) or not isinstance(t.token, str):
                return f"token {i}: {getattr(t, 'token', t)!r} is not a string"
            if not _is_logprob(t.logprob, chosen=True):
                return f"token {i}: logprob {t.logprob!r} is not a log probability"
            if t.nbytes is not None and (type(t.nbytes) is not int or t.nbytes < 0):
                return f"token {i}: byte length {t.nbytes!r} is not a count"
            for pair in t.top:
                if (
                    not isinstance(pair, tuple)
                    or len(pair) != 2
                    or not isinstance(pair[0], str)
                    or not _is_logprob(pair[1])
                ):
                    return f"token {i}: top logprob {pair!r} is not a (token, logprob) pair"
            if (conflict := logprob_conflict(t)) is not None:
                return f"token {i}: {conflict}"
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: str) -> RawOutput:
        """Read :meth:`to_json`'s output back; raises ValueError on anything else."""
        try:
            d = json.loads(data)
            tokens = d.pop("tokens")
            if tokens is not None:
                tokens = tuple(
                    TokenLogprobs(
                        t["token"], t["logprob"], tuple((a, b) for a, b in t["top"]), t["nbytes"]
                    )
                    for t in tokens
                )
            return cls(tokens=tokens, **d)
        except (TypeError, KeyError, AttributeError, ValueError) as e:
            raise ValueError(f"not a stored judge output: {type(e).__name__}: {e}") from e


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


def _token_at(tokens: Sequence[TokenLogprobs], text: str, offset: int) -> int | None:
    """Index of the token holding character ``offset`` of the generated ``text``."""
    use_bytes = all(t.nbytes is not None for t in tokens)
    target = len(text[:offset].encode()) if use_bytes else offset
    position = 0
    for i, t in enumerate(tokens):
        size = t.nbytes if use_bytes and t.nbytes is not None else len(t.token)
        if position <= target < position + size:
            return i
        position += size
    return None


def _cut_in_reasoning(text: str) -> bool:
    """The output opens a ``<think>`` that it never closes."""
    head = text.lstrip()
    return head[:7].lower() == "<think>" and "</think>" not in head.lower()


def finish(
    request: JudgeRequest,
    raw: RawOutput,
    *,
    backend: str,
    model: str,
    latency_s: float = 0.0,
    attempts: int = 1,
    cached: bool = False,
) -> Judgement:
    """Turn a backend's raw output into a :class:`Judgement` (see the module docs)."""
    common: dict[str, Any] = {
        "latency_s": latency_s, "backend": backend, "model": model, "cached": cached,
        "attempts": attempts, "key": request.key, "low": request.low, "high": request.high,
    }  # fmt: skip
    problem = raw.problem()
    if problem is not None:
        return Judgement(score=None, reason=f"backend: malformed answer: {problem}", **common)
    full = request.prefill + raw.text
    if request.scores:
        return _finish_several(request, raw, full, common)
    prompt = "\n".join(m["content"] for m in request.messages)
    fences = prompt_fences(prompt)
    parsed = parse_score(
        full, low=request.low, high=request.high, bare=request.score_only, fences=fences,
        echoes=untrusted_score_lines(prompt, fences),
    )  # fmt: skip
    if raw.finish_reason == "length" and _cut_in_reasoning(full):
        parsed = ParsedScore(None, "parse: output cut inside the judge's <think> reasoning")
    expected = mass = None
    probs: tuple[float, ...] | None = None
    if parsed.value is not None and parsed.start is not None and raw.tokens:
        number = parsed.number or ""
        at = parsed.start - len(request.prefill)
        index = _token_at(raw.tokens, raw.text, at) if at >= 0 else None
        # Only a token that is exactly the written number says how sure the judge was of
        # it; "10" split into "1", "0", or "4." in one token, keep the written number.
        if index is not None:
            probs, expected, mass = _distribution(request, raw.tokens[index], number)
    score = expected if expected is not None else parsed.value
    reason = None
    if score is None:
        reason = parsed.reason or "parse: no score"
        if raw.finish_reason == "length":
            reason += " (output cut at max_tokens)"
    return Judgement(
        score=score,
        reason=reason,
        parsed=parsed.value,
        expected=expected,
        mass=mass,
        probs=probs,
        text=full,
        prompt_tokens=raw.prompt_tokens,
        completion_tokens=raw.completion_tokens,
        cached_tokens=raw.cached_tokens,
        **common,
    )


def _distribution(
    request: JudgeRequest, token: TokenLogprobs, number: str
) -> tuple[tuple[float, ...] | None, float | None, float | None]:
    """``(probs, expected, mass)`` at a score token that is exactly the written number."""
    if token.token.strip() != number:
        return None, None, None
    distribution = score_distribution(token.top, low=request.low, high=request.high)
    mass = sum(distribution)
    if mass > 0 and mass >= request.min_mass:
        expected = sum(p * (request.low + i) for i, p in enumerate(distribution)) / mass
        return distribution, expected, mass
    return None, None, mass


def _finish_several(
    request: JudgeRequest, raw: RawOutput, full: str, common: dict[str, Any]
) -> Judgement:
    """One judgement per step of a one-request answer; usage counted once, on the first."""
    usage: dict[str, Any] = {"prompt_tokens": raw.prompt_tokens,
                             "completion_tokens": raw.completion_tokens,
                             "cached_tokens": raw.cached_tokens}  # fmt: skip
    found, reason = parse_step_scores(raw.text, request.scores, low=request.low, high=request.high)
    if reason is not None and raw.finish_reason == "length":
        reason += " (output cut at max_tokens)"
    parts = []
    tokens = raw.tokens or ()
    for k, (value, offset) in enumerate(found):
        index = _token_at(tokens, raw.text, offset) if tokens else None
        probs = expected = mass = None
        if index is not None:
            probs, expected, mass = _distribution(request, tokens[index], str(value))
        later = {} if k == 0 else {"attempts": 0, "latency_s": 0.0, "asked": False}
        parts.append(Judgement(
            score=expected if expected is not None else float(value), reason=None,
            parsed=float(value), expected=expected, mass=mass, probs=probs, text=full,
            **(usage if k == 0 else {}), **{**common, "key": f"{request.key}/{k}", **later},
        ))  # fmt: skip
    score = parts[-1].score if parts else None
    return Judgement(score=score, reason=reason, text=full, parts=tuple(parts), **usage, **common)


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


class AnswerCache(Protocol):
    """What :class:`CachedBatch` reads of a cache (:class:`~.cache.JudgeCache`), so that
    this module sits below the cache that stores its outputs."""

    def get_many(self, keys: Iterable[str]) -> dict[str, RawOutput]: ...


class CachedBatch:
    """The bookkeeping every backend shares: cache hits, and identical requests.

    Requests the cache answers are finished at once; of several identical requests
    (same cache key) only the first is sent, and the others get a copy of its
    judgement. Identical prompts in one batch are common (duplicate rollouts), and
    judging them once also makes a run's scores identical to a rerun from the cache.
    """

    def __init__(
        self,
        requests: Sequence[JudgeRequest],
        keys: Sequence[str],
        cache: AnswerCache | None,
        *,
        backend: str,
        model: str,
    ) -> None:
        self.requests = requests
        hits = cache.get_many(keys) if cache is not None else {}
        # An answer stored by an older version that no longer passes the checks is a
        # miss: judged again, and the new answer replaces it.
        hits = {k: raw for k, raw in hits.items() if raw.problem() is None}
        self.results: dict[int, Judgement] = {
            i: finish(r, hits[k], backend=backend, model=model, attempts=0, cached=True)
            for i, (r, k) in enumerate(zip(requests, keys, strict=True))
            if k in hits
        }
        first: dict[str, int] = {}
        self.todo: list[int] = []  # the requests to send
        self._copies: list[tuple[int, int]] = []
        for i, k in enumerate(keys):
            if i in self.results:
                continue
            if k in first:
                self._copies.append((i, first[k]))
            else:
                first[k] = i
                self.todo.append(i)
        progress.asked(len(self.todo))

    def done(self, judged: dict[int, Judgement]) -> list[Judgement]:
        """All judgements in request order, given those of :attr:`todo`."""
        self.results.update(judged)
        for i, source in self._copies:
            copy = replace(self.results[source], key=self.requests[i].key, cached=True, attempts=0)
            self.results[i] = replace(copy, latency_s=0.0)
        return [self.results[i] for i in range(len(self.requests))]


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
