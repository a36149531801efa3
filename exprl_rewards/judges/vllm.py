"""A judge on vLLM in-process (``vllm.LLM``): batched chat generation, no server.

Prefix caching is on, so the instructions, problem and reference that all rollouts of a
prompt share are computed once per batch (see the cache-friendly template order).
Requests are grouped by whether they continue an assistant prefill (vLLM takes that
per call) and sent as one batch per group; the engine is not thread-safe, so calls are
serialised with a lock and run in a worker thread, off the event loop.

Importing this module does not import vLLM; creating a :class:`VLLMJudge` does, and
raises :class:`~exprl_rewards.errors.MissingExtraError` naming the extra when vLLM is
missing. On CPU, install the ``cpu`` extra (the vLLM CPU build); on GPU, ``vllm``.
vLLM starts its engine in a subprocess with ``spawn``: a script that builds a
``VLLMJudge`` at import time needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError
from . import progress
from .base import Judgement, JudgeRequest, unscored
from .cache import JudgeCache
from .local_model import cpu_dtype
from .logs import engine_output
from .verdict import CachedBatch, RawOutput, TokenLogprobs, finish

__all__ = ["VLLMJudge"]


class VLLMJudge:
    """Grade judge requests with a ``vllm.LLM`` engine in this process.

    The engine starts on the first request the cache cannot answer.

    Args:
        model: a model directory or name vLLM can load.
        temperature: sampling temperature (0: greedy, as released).
        max_tokens: generation limit when the request sets none (released: 2048).
        top_logprobs: alternatives per generated token, for logprob-weighted scores
            (at most the engine's ``max_logprobs``, 20 by default). None: off.
        cache: a :class:`JudgeCache` or its path; None disables caching.
        name: the model name recorded in judgements and cache keys (default: ``model``).
        engine_log: a file that takes everything the engine prints (vLLM's and torch's
            warnings, progress bars, C++ notices) while it starts and generates; None:
            the terminal.
        constrain_scores: decode only the allowed answers of score-only requests
            (``"1"`` ... ``"5"``) with vLLM's structured outputs. The judge then always
            writes a score, its own choice among the valid ones, and the logprobs at it
            are over those choices (``mass`` is about 1 by construction).
        engine_process: run vLLM's engine core in a subprocess (vLLM's default). False
            keeps it in this process: on a 2-core CPU it starts in ~8 s instead of
            ~35 s and needs no ``__main__`` guard (it sets
            ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` for this process).
        **llm_kwargs: passed to ``vllm.LLM`` (e.g. ``max_model_len=2048``,
            ``enforce_eager=True``). ``enable_prefix_caching`` defaults to True; on a CPU
            ``dtype`` defaults to :func:`~exprl_rewards.judges.local_model.cpu_dtype` (float32
            unless the CPU has native bf16).
    """

    backend = "vllm"
    batches = True  # works in whole batches: conversations go a round at a time

    def __init__(
        self,
        model: str | Path,
        *,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        top_logprobs: int | None = 20,
        cache: JudgeCache | str | Path | None = None,
        name: str | None = None,
        engine_process: bool = True,
        constrain_scores: bool = False,
        engine_log: str | Path | None = None,
        **llm_kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise MissingExtraError("vllm", "cpu")
        self.engine_process, self.constrain_scores = engine_process, constrain_scores
        self.engine_log = Path(engine_log) if engine_log is not None else None
        self.model = name or str(model)
        self.temperature, self.max_tokens, self.top_logprobs = temperature, max_tokens, top_logprobs
        self.cache = JudgeCache(cache) if isinstance(cache, (str, Path)) else cache
        llm_kwargs.setdefault("enable_prefix_caching", True)
        if top_logprobs is not None:
            llm_kwargs.setdefault("max_logprobs", max(20, top_logprobs))
        self._model_path, self._llm_kwargs = str(model), llm_kwargs
        self._llm: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # The engine stays in this process; a pickled judge starts its own when used.
        state = self.__dict__.copy()
        state["_llm"] = state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM`` engine, started on first use (a run served from the cache
        never starts it)."""
        if self._llm is None:
            if not self.engine_process:
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            # torch and vLLM warn about their own internals on import and start-up;
            # those are not the caller's to act on.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    with engine_output(self.engine_log):
                        import vllm
                        from vllm.platforms import current_platform
                except ImportError as e:
                    raise MissingExtraError("vllm", "cpu") from e
                kwargs = dict(self._llm_kwargs)
                if current_platform.is_cpu():
                    kwargs.setdefault("dtype", cpu_dtype())
                with engine_output(self.engine_log):
                    self._llm = vllm.LLM(model=self._model_path, **kwargs)
        return self._llm

    def sampling(self) -> dict[str, Any]:
        """The parameters that shape the output (part of the cache key)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_logprobs": self.top_logprobs,
            "constrain_scores": self.constrain_scores,
        }

    async def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """Return one judgement per request, in order."""
        return await asyncio.to_thread(self.judge_blocking, requests)

    def judge_blocking(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """The same as :meth:`judge`, blocking the calling thread."""
        sampling = self.sampling()
        keys = [r.cache_key(self.backend, self.model, sampling) for r in requests]
        batch = CachedBatch(requests, keys, self.cache, backend=self.backend, model=self.model)
        judged: dict[int, Judgement] = {}
        for prefilled in (False, True):
            todo = [i for i in batch.todo if bool(requests[i].prefill) == prefilled]
            if todo:
                judged.update(self._generate(requests, keys, todo, prefilled))
        return batch.done(judged)

    def _generate(
        self, requests: Sequence[JudgeRequest], keys: list[str], todo: list[int], prefilled: bool
    ) -> dict[int, Judgement]:
        engine = self.llm  # first: it imports vLLM with the engine's output redirected
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        conversations = []
        params = []
        for i in todo:
            messages = [{"role": m["role"], "content": m["content"]} for m in requests[i].messages]
            if prefilled:
                messages.append({"role": "assistant", "content": requests[i].prefill})
            conversations.append(messages)
            structured = None
            if self.constrain_scores and requests[i].pattern:
                structured = StructuredOutputsParams(regex=requests[i].pattern)
            elif self.constrain_scores and requests[i].choices:
                structured = StructuredOutputsParams(choice=list(requests[i].choices))
            params.append(
                SamplingParams(
                    temperature=self.temperature,
                    max_tokens=requests[i].max_tokens or self.max_tokens,
                    logprobs=self.top_logprobs,
                    structured_outputs=structured,
                )
            )
        start = time.perf_counter()
        try:
            # vLLM's grammar backend warns about its own deprecated options on first
            # use; that is not the caller's to act on.
            with self._lock, warnings.catch_warnings(), engine_output(self.engine_log):
                warnings.simplefilter("ignore", DeprecationWarning)
                outputs = engine.chat(
                    conversations,
                    params,
                    use_tqdm=_answers,
                    add_generation_prompt=not prefilled,
                    continue_final_message=prefilled,
                )
        except Exception as e:
            if len(todo) > 1:
                # vLLM rejects a whole batch for one bad prompt (longer than the context,
                # say): split it in halves and retry each, so the good requests stay
                # batched (about 2 log2(n) calls for one bad request, not n) and only the
                # bad one ends unscored, with vLLM's message.
                half = len(todo) // 2
                results = self._generate(requests, keys, todo[:half], prefilled)
                results.update(self._generate(requests, keys, todo[half:], prefilled))
                return results
            elapsed = time.perf_counter() - start
            progress.answered(len(todo))
            reason = f"backend: vLLM failed: {type(e).__name__}: {e}"[:300]
            return {
                i: unscored(
                    requests[i],
                    reason,
                    backend=self.backend,
                    model=self.model,
                    latency_s=elapsed,
                    attempts=1,
                )
                for i in todo
            }
        elapsed = time.perf_counter() - start
        raws = [_raw_output(out) for out in outputs]
        judged = {
            i: finish(requests[i], raw, backend=self.backend, model=self.model, latency_s=elapsed)
            for i, raw in zip(todo, raws, strict=True)
        }
        if self.cache is not None:  # parsed first: only well-formed answers are stored
            self.cache.put_many(
                (keys[i], self.model, raw)
                for i, raw in zip(todo, raws, strict=True)
                if raw.problem() is None
            )
        return judged


def _answers(*args: Any, **kwargs: Any) -> Any:
    """vLLM's progress bar, made silent: each finished request is reported to the
    judge's progress listener (:mod:`~exprl_rewards.judges.progress`) instead."""
    from tqdm import tqdm

    class Answers(tqdm):  # type: ignore[type-arg]
        def update(self, n: float | None = 1) -> bool | None:
            progress.answered(int(n or 0))
            return super().update(n)

    return Answers(*args, **{**kwargs, "file": io.StringIO(), "dynamic_ncols": False})


def _raw_output(output: Any) -> RawOutput:
    completion = output.outputs[0]
    tokens: tuple[TokenLogprobs, ...] | None = None
    if completion.logprobs is not None:
        collected = []
        for token_id, position in zip(completion.token_ids, completion.logprobs, strict=False):
            chosen = position.get(token_id)
            ranked = sorted(
                position.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30
            )
            collected.append(
                TokenLogprobs(
                    token=(chosen.decoded_token or "") if chosen else "",
                    logprob=chosen.logprob if chosen else float("nan"),
                    top=tuple((lp.decoded_token or "", lp.logprob) for lp in ranked),
                )
            )
        tokens = tuple(collected)
    return RawOutput(
        text=completion.text,
        tokens=tokens,
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(completion.token_ids),
        cached_tokens=output.num_cached_tokens,
        finish_reason=completion.finish_reason,
    )
