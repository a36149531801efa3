"""How a call to an OpenAI-compatible server fails, and which failures are retried.

Retried: 408, 409, 429, 5xx, timeouts (an attempt past its deadline), dropped
connections and malformed answers (a 200 without a usable completion, or a body that is
not JSON). Not retried: any other 4xx (a bad request will not get better) and redirects,
which are refused: a 3xx would send the prompt, hidden reference included, to another
server, whose answer would be recorded as this judge's. :func:`describe` turns each
into the one-line reason an unscored judgement carries; :class:`Backoff` waits with full
jitter and honours ``Retry-After``.
"""

from __future__ import annotations

import json
import random
from typing import Any

import openai
from tenacity import RetryCallState

__all__ = ["AttemptTimeout", "Backoff", "MalformedResponse", "describe", "retryable"]

RETRY_STATUS = {408, 409, 429}


class MalformedResponse(Exception):
    """A 200 answer without a usable completion (no choices, content of the wrong type,
    logprobs that are not log probabilities)."""


class AttemptTimeout(Exception):
    """An attempt outran its deadline."""


def retryable(e: BaseException) -> bool:
    if isinstance(e, openai.APIStatusError):
        return e.status_code in RETRY_STATUS or e.status_code >= 500
    # A 200 with a body that is not JSON (a proxy's error page) surfaces as a ValueError.
    malformed = (openai.APIResponseValidationError, MalformedResponse, json.JSONDecodeError)
    return isinstance(e, (openai.APIConnectionError, AttemptTimeout, *malformed))


def describe(e: BaseException) -> str:
    if isinstance(e, openai.APIStatusError) and e.response.is_redirect:
        where = e.response.headers.get("location", "?")
        return (f"{e.status_code} redirect to {where[:120]} refused (the prompt holds the"
                " hidden reference; point --base-url at the judge itself)")  # fmt: skip
    if isinstance(e, openai.APIStatusError):
        body: dict[str, Any] = e.body if isinstance(e.body, dict) else {}
        nested = body.get("error")
        error: dict[str, Any] = nested if isinstance(nested, dict) else body
        message = str(error.get("message") or e.message)[:200]
        return f"{e.status_code} {e.response.reason_phrase}: {message}"
    if isinstance(e, (openai.APITimeoutError, AttemptTimeout)):
        return "timeout"
    if isinstance(e, MalformedResponse):
        return f"malformed answer: {e}"[:200]
    if isinstance(e, openai.APIConnectionError):
        return f"connection error ({e.__cause__ or e})"[:200]
    return f"{type(e).__name__}: {e}"[:200]


def retry_after(e: BaseException | None) -> float | None:
    response = getattr(e, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Backoff:
    """Exponential backoff with full jitter; waits at least Retry-After when given."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum

    def __call__(self, state: RetryCallState) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        wait = random.uniform(0, ceiling)
        hint = retry_after(state.outcome.exception() if state.outcome else None)
        return min(self.maximum, max(wait, hint)) if hint is not None else wait
