"""From a backend's raw output to a judgement: the one place where a judge's answer
becomes a score, for every backend and for cache hits alike (:func:`finish`).

- **the text decides**: the score is the number on the judge's last score line
  (:func:`~exprl_rewards.judges.parsing.parse_score`, which ignores text echoed from the
  request's own fences); an answer the parser rejects is unscored with the parser's
  reason, whatever the logprobs say;
- **logprobs refine**: when the token holding that number has top logprobs, the score
  becomes the expected value over the valid score tokens there, if they hold at least
  ``min_mass`` of the probability (:data:`~.base.DEFAULT_MIN_MASS`); below it the parsed
  number stands. The mass is reported either way;
- **malformed answers are unscored**: content that is not a string, logprobs that are
  not log probabilities (:meth:`RawOutput.problem`), and logprobs that contradict the
  text: a chosen token whose logprob differs from its own entry in the top list, or
  that is absent from the list yet likelier than its last entry (a server that mixed
  up tokens or positions; :func:`logprob_conflict`). Backends check an answer before
  they cache it, and a cached answer that fails the check is a miss
  (:class:`CachedBatch`);
- **a judge cut inside its reasoning** (``finish_reason == "length"`` with a ``<think>``
  never closed) is unscored: a score line in there is a draft, not a verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from . import progress
from .base import Judgement, JudgeRequest
from .parsing import (
    ParsedScore,
    parse_score,
    parse_step_scores,
    prompt_fences,
    score_distribution,
    untrusted_score_lines,
)

__all__ = [
    "CachedBatch",
    "RawOutput",
    "TokenLogprobs",
    "finish",
    "logprob_conflict",
]


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
