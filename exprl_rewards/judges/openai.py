"""A judge on any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp, OpenAI...).

Built on the official ``openai`` async client, with its own retries turned off and
replaced by tenacity (what is retried, and how: :mod:`~exprl_rewards.judges.retries`).
``timeout`` is a deadline for a whole attempt (connect, wait and body), not per read: a
server that trickles its body a byte at a time cannot hold a run. A semaphore bounds
the requests in flight. Several base URLs (replicas of one model) share the load
round-robin; a replica that times out or refuses connections is skipped for
``replica_cooldown`` seconds, so the batch keeps going while one is down.

Every request ends scored or unscored with a reason (``"backend: 429 Too Many Requests
after 5 attempts"``); nothing is dropped and no failure becomes a 0. Redirects are not
followed (a backend failure naming where they pointed).

:meth:`OpenAIJudge.check` proves the judge before a run: each replica's ``/v1/models``
must list the model, and a one-line score-only request must come back answered; the
model's identity as the server reports it (vLLM's ``root``, or an explicit
``revision``) and the base URLs key the cache, so two models served under one alias
never share cached scores.

The client and semaphore are made per event loop, so the same judge works from
``asyncio.run`` in a script, from :func:`~exprl_rewards.judges.base.judge_sync` inside a
trainer's running loop, and from a server's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from ..errors import ConfigError, JudgeUnavailable
from . import progress
from .base import Judgement, JudgeRequest, unscored
from .cache import JudgeCache
from .health import CHECK_REQUEST, require_answered
from .retries import AttemptTimeout, Backoff, MalformedResponse, describe, retryable
from .verdict import CachedBatch, RawOutput, TokenLogprobs, finish

__all__ = ["OpenAIJudge"]


@dataclass
class _LoopState:
    clients: list[openai.AsyncOpenAI]
    semaphore: asyncio.Semaphore
    users: int = 0


class OpenAIJudge:
    """Grade judge requests on an OpenAI-compatible ``/v1/chat/completions`` server.

    Args:
        model: the served model name.
        base_url: the server's ``.../v1`` URL, or a list of replicas; None means OpenAI.
        api_key: the key; default: the environment variable ``api_key_env``, else
            ``"EMPTY"`` (what a local vLLM server accepts).
        api_key_env: where to read the key (default: ``EXPRL_JUDGE_API_KEY``, else
            ``OPENAI_API_KEY``).
        temperature: sampling temperature (0: greedy, as released).
        max_tokens: generation limit (released: 2048).
        top_logprobs: alternatives to return per token (vLLM: up to its
            ``--max-logprobs``; OpenAI: 20); enables logprob-weighted scores. None: off.
        concurrency: requests in flight at once.
        timeout: seconds an attempt may take in all (connect, wait, read the body).
        max_attempts: attempts per request, the first included.
        backoff, max_backoff: first and largest wait between attempts, in seconds.
        cache: a :class:`JudgeCache` or its path; None disables caching.
        prefill: send the request's prefill as a final assistant message that the server
            continues (vLLM's ``continue_final_message``); not all servers support it.
        seed: sampling seed, for servers that honour it.
        extra_body: extra JSON fields for every request.
        replica_cooldown: seconds a replica that timed out or refused is skipped.
        constrain_scores: ask the server to decode only the allowed answers of
            score-only requests (``"1"`` ... ``"5"``), through vLLM's
            ``structured_outputs: {"choice": [...]}``; servers without it reject or
            ignore the field.
        revision: the judge model's identity (a checkpoint hash, a tag) when the
            server's own report is not enough; keys the cache and names the judge in
            results. None: what :meth:`check` reads from ``/v1/models``.
    """

    backend = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        top_logprobs: int | None = None,
        concurrency: int = 32,
        timeout: float = 120.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        cache: JudgeCache | str | Path | None = None,
        prefill: bool = False,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
        replica_cooldown: float = 10.0,
        constrain_scores: bool = False,
        revision: str | None = None,
    ) -> None:
        if concurrency < 1 or max_attempts < 1 or timeout <= 0:
            raise ConfigError("concurrency and max_attempts must be >= 1 and timeout > 0")
        urls: list[str | None] = (
            [base_url] if isinstance(base_url, str) or base_url is None else list(base_url)
        )
        if not urls:
            raise ConfigError("base_url is an empty list; give at least one server")
        for url in urls:
            if url is not None and not url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"base URL {url!r} has no http:// or https://; write it in full, e.g."
                    f" http://{url.split('://')[-1]}"
                )
        self.model = model
        self.base_urls = urls
        names = (api_key_env,) if api_key_env else ("EXPRL_JUDGE_API_KEY", "OPENAI_API_KEY")
        self.api_key = api_key or next(filter(None, map(os.environ.get, names)), "EMPTY")
        self.temperature, self.max_tokens, self.top_logprobs = temperature, max_tokens, top_logprobs
        self.concurrency, self.timeout, self.max_attempts = concurrency, timeout, max_attempts
        self.backoff, self.max_backoff = backoff, max_backoff
        self.cache = JudgeCache(cache) if isinstance(cache, (str, Path)) else cache
        self.prefill, self.seed, self.extra_body = prefill, seed, dict(extra_body or {})
        self.replica_cooldown, self.constrain_scores = replica_cooldown, constrain_scores
        self.revision = revision
        self.served: dict[str, str | None] = {}  # base URL -> the model's root, once checked
        self._down_until = [0.0] * len(urls)
        self._next = 0
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __getstate__(self) -> dict[str, Any]:
        # Clients and semaphores belong to event loops in this process: a pickled judge
        # (a reward function sent to a worker) makes its own on first use.
        state = self.__dict__.copy()
        state["_per_loop"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._per_loop = weakref.WeakKeyDictionary()

    def sampling(self) -> dict[str, Any]:
        """The parameters that shape the output (part of the cache key)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_logprobs": self.top_logprobs,
            "seed": self.seed,
            "prefill": self.prefill,
            "extra_body": self.extra_body,
            "constrain_scores": self.constrain_scores,
        }

    def identity(self) -> dict[str, Any]:
        """What identifies the judge's model: its name, where it is served, and its
        revision (given, or the ``root`` each replica reported to :meth:`check`)."""
        roots = sorted({r for r in self.served.values() if r})
        return {
            "backend": self.backend,
            "model": self.model,
            "base_urls": sorted(u or "https://api.openai.com/v1" for u in self.base_urls),
            "revision": self.revision or (roots[0] if len(roots) == 1 else roots or None),
        }

    def _cache_model(self) -> str:
        return json.dumps(self.identity(), sort_keys=True)

    async def check(self) -> dict[str, Any]:
        """Prove the judge can grade before a run starts; return :meth:`identity`.

        Each replica's ``/v1/models`` must list the model (its ``root`` is read as the
        revision when none was given), and a one-line score-only request must come
        back answered (a missing score is logged), without retries or the cache.

        Raises:
            JudgeUnavailable: a replica is unreachable, redirects, does not serve the
                model, or answers without a score.
        """
        state = await self._enter_loop()
        try:
            for url, client in zip(self.base_urls, state.clients, strict=True):
                where = url or "https://api.openai.com/v1"
                try:
                    page = await asyncio.wait_for(client.models.list(), self.timeout)
                except Exception as e:
                    raise JudgeUnavailable(
                        f"the judge at {where} cannot be reached ({describe(e)}). Nothing"
                        " was graded. Start the judge server, or fix --base-url"
                    ) from e
                served = {m.id: (m.model_extra or {}).get("root") for m in page.data}
                if self.model not in served:
                    names = ", ".join(sorted(served)) or "none"
                    raise JudgeUnavailable(
                        f"the judge at {where} does not serve a model named {self.model!r};"
                        f" it serves: {names}. Nothing was graded. Pass --model with one"
                        " of those names"
                    )
                root = served[self.model]
                self.served[where] = root if isinstance(root, str) else None
                request = dataclasses.replace(
                    CHECK_REQUEST, prefill=CHECK_REQUEST.prefill if self.prefill else ""
                )
                start = time.perf_counter()
                try:
                    raw = await self._attempt(client, request)
                except Exception as e:
                    raise JudgeUnavailable(
                        f"the judge at {where} (model {self.model!r}) failed a one-line check"
                        f" request: {describe(e)}. Nothing was graded. Check the judge"
                        " server's log, or fix --base-url/--model"
                    ) from e
                judgement = finish(request, raw, backend=self.backend, model=self.model,
                                   latency_s=time.perf_counter() - start)  # fmt: skip
                require_answered(self, judgement)
        finally:
            await self._exit_loop(state)
        return self.identity()

    async def _enter_loop(self) -> _LoopState:
        """This loop's clients and semaphore, shared by the judge calls running on it."""
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(loop)
        if state is None:
            clients = [
                openai.AsyncOpenAI(
                    base_url=url,
                    api_key=self.api_key,
                    timeout=self.timeout,
                    max_retries=0,
                    # a redirect would hand the prompt, hidden reference included, and
                    # the verdict to another server: refused (a backend failure)
                    http_client=openai.DefaultAsyncHttpxClient(
                        follow_redirects=False, timeout=self.timeout
                    ),
                )
                for url in self.base_urls
            ]
            state = _LoopState(clients, asyncio.Semaphore(self.concurrency))
            self._per_loop[loop] = state
        state.users += 1
        return state

    async def _exit_loop(self, state: _LoopState) -> None:
        # Close the connection pools when the last call on this loop ends: a pool left
        # open would be torn down after its loop closed (asyncio.run, judge_sync).
        state.users -= 1
        if state.users == 0:
            self._per_loop.pop(asyncio.get_running_loop(), None)
            await asyncio.gather(*(c.close() for c in state.clients), return_exceptions=True)

    def _pick_replica(self) -> int:
        now = time.monotonic()
        n = len(self.base_urls)
        for step in range(n):
            i = (self._next + step) % n
            if self._down_until[i] <= now:
                self._next = i + 1
                return i
        return min(range(n), key=self._down_until.__getitem__)  # all down: the soonest back

    async def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """Return one judgement per request, in order (see the module docs)."""
        if not self.prefill:  # the server will not see the prefill: do not parse as if it had
            requests = [dataclasses.replace(r, prefill="") for r in requests]
        sampling = self.sampling()
        identity = self._cache_model()  # once a batch, not once a request
        keys = [r.cache_key(self.backend, identity, sampling) for r in requests]
        batch = CachedBatch(requests, keys, self.cache, backend=self.backend, model=self.model)
        if not batch.todo:
            return batch.done({})
        state = await self._enter_loop()
        try:
            judged = await asyncio.gather(
                *(self._judge_one(state, requests[i], keys[i]) for i in batch.todo)
            )
        finally:
            await self._exit_loop(state)
        return batch.done(dict(zip(batch.todo, judged, strict=True)))

    async def _judge_one(self, state: _LoopState, request: JudgeRequest, key: str) -> Judgement:
        start = time.perf_counter()
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=Backoff(self.backoff, self.max_backoff),
            retry=retry_if_exception(retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    async with state.semaphore:
                        # Pick once a slot is free, so a replica found down meanwhile is skipped.
                        replica = self._pick_replica()
                        try:
                            raw = await self._attempt(state.clients[replica], request)
                        except (openai.APITimeoutError, openai.APIConnectionError, AttemptTimeout):
                            self._down_until[replica] = time.monotonic() + self.replica_cooldown
                            raise
        except asyncio.CancelledError:
            raise
        except Exception as e:  # every failure becomes a visible, unscored judgement
            progress.answered()
            more = f" after {attempts} attempts" if attempts > 1 else ""
            return unscored(
                request,
                f"backend: {describe(e)}{more}",
                backend=self.backend,
                model=self.model,
                latency_s=time.perf_counter() - start,
                attempts=attempts,
            )
        progress.answered()
        judgement = finish(
            request,
            raw,
            backend=self.backend,
            model=self.model,
            latency_s=time.perf_counter() - start,
            attempts=attempts,
        )
        if self.cache is not None:  # parsed first: only a well-formed answer is stored
            self.cache.put_many([(key, self.model, raw)])
        return judgement

    async def _attempt(self, client: openai.AsyncOpenAI, request: JudgeRequest) -> RawOutput:
        """One call under the attempt's deadline, its answer checked."""
        try:
            raw = await asyncio.wait_for(self._call(client, request), self.timeout)
        except asyncio.TimeoutError:
            raise AttemptTimeout(f"no complete answer within {self.timeout:g} s") from None
        problem = raw.problem()
        if problem is not None:
            raise MalformedResponse(problem)
        return raw

    async def _call(self, client: openai.AsyncOpenAI, request: JudgeRequest) -> RawOutput:
        messages = [{"role": m["role"], "content": m["content"]} for m in request.messages]
        extra = dict(self.extra_body)
        if self.constrain_scores and request.pattern:
            extra["structured_outputs"] = {"regex": request.pattern}
        elif self.constrain_scores and request.choices:
            extra["structured_outputs"] = {"choice": list(request.choices)}
        if self.prefill and request.prefill:
            messages.append({"role": "assistant", "content": request.prefill})
            extra.update(continue_final_message=True, add_generation_prompt=False)
        kwargs: dict[str, Any] = {}
        if self.top_logprobs is not None:
            kwargs.update(logprobs=True, top_logprobs=self.top_logprobs)
        if self.seed is not None:
            kwargs["seed"] = self.seed
        response = await client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=self.temperature,
            max_tokens=request.max_tokens or self.max_tokens,
            extra_body=extra or None,
            **kwargs,
        )
        choices = getattr(response, "choices", None)
        if not choices or choices[0].message is None or choices[0].message.content is None:
            raise MalformedResponse(f"no completion in the response: {str(response)[:120]!r}")
        choice = choices[0]
        tokens = None
        if choice.logprobs is not None and choice.logprobs.content is not None:
            try:  # the client does not validate: any field may be of any JSON type
                tokens = tuple(
                    TokenLogprobs(
                        t.token,
                        t.logprob,
                        tuple((a.token, a.logprob) for a in (t.top_logprobs or ())),
                        len(t.bytes) if t.bytes is not None else None,
                    )
                    for t in choice.logprobs.content
                )
            except (TypeError, AttributeError) as e:
                raise MalformedResponse(f"logprobs: {type(e).__name__}: {e}") from None
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return RawOutput(
            text=choice.message.content,
            tokens=tokens,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cached_tokens=getattr(details, "cached_tokens", None),
            finish_reason=choice.finish_reason,
        )
