"""On-policy sampling in an in-process vLLM engine, and the weight push that keeps it on-policy.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that the
trainer can hand it new weights without a restart:

1. ``llm.collective_rpc("reload_weights", kwargs={"weights_iterator": ...,
   "is_checkpoint_format": True})`` with the Hugging Face parameter names of the whole
   state dict (vLLM fuses q/k/v and gate/up, ties the head and repacks for oneDNN
   itself; a layer given in part would keep its old weights);
2. ``llm.reset_prefix_cache()``: a prompt cached under the old weights would otherwise be
   read back stale. It refuses while requests run, so it is called between ``generate``
   calls, and a refusal is an error.

vLLM sets torch to one thread when its engine starts and then blocks
``torch.set_num_threads``; the trainer shares the process, so the sampler gives torch its
threads back once the engine is up.

Sampling keeps each sampled token's log-probability under the distribution actually
sampled from (``logprobs_mode="processed_logprobs"``: after temperature), which the
importance weights need. Each rollout is its own request with its own seed (derived from
the run's seed, the step and its index), so a resumed run samples what an uninterrupted
one would.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExpRLError, MissingExtraError
from .config import SamplerConfig

__all__ = ["Sample", "Sampler"]


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class Sample:
    """One rollout as sampled: its token ids, their log-probs, and whether it was cut."""

    prompt_index: int
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    truncated: bool


class Sampler:
    """A vLLM engine for the policy: ``sample`` rollouts, ``push`` new weights.

    Args:
        model_dir: the policy's initial weights (a Hugging Face folder).
        config: the sampler section of the training config.
        dtype: the engine's dtype; the trainer's, so that their log-probs agree.
        threads_bind: ``VLLM_CPU_OMP_THREADS_BIND`` on CPU (``"nobind"`` leaves the cores
            to share with the trainer's torch threads); None keeps the environment's.
    """

    def __init__(
        self,
        model_dir: str | Path,
        config: SamplerConfig,
        *,
        dtype: str = "float32",
        threads_bind: str | None = "nobind",
    ) -> None:
        try:
            vllm: Any = importlib.import_module("vllm")
        except ImportError as e:
            raise MissingExtraError("vllm", "cpu") from e
        self.config = config
        options: dict[str, Any] = {}
        if config.block_size is not None:
            options["block_size"] = config.block_size
        env = {
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the push needs the engine in this process
            "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(config.kv_cache_gb))),
        }
        if threads_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = threads_bind
        # vLLM drops torch to one thread "for serving" and then disables set_num_threads;
        # the trainer shares this process, so its threads come back afterwards.
        torch = importlib.import_module("torch")
        set_threads, threads = torch.set_num_threads, torch.get_num_threads()
        with _environment(env):  # only for this engine: a judge server started later keeps its own
            self.llm = vllm.LLM(
                model=str(model_dir), dtype=dtype, max_model_len=config.max_model_len,
                enforce_eager=True, logprobs_mode="processed_logprobs",
                gpu_memory_utilization=config.gpu_memory_utilization, **options,
            )  # fmt: skip
        set_threads(threads)
        self._params = vllm.SamplingParams
        self._prompt = vllm.TokensPrompt

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        *,
        seed: int,
        temperature: float | None = None,
    ) -> list[Sample]:
        """``n`` rollouts of each prompt (token ids), each its own seeded request, in order."""
        t = self.config.temperature if temperature is None else temperature
        requests, params = [], []
        for p, prompt in enumerate(prompts):
            for i in range(n):
                requests.append(self._prompt(prompt_token_ids=list(prompt)))
                params.append(
                    self._params(
                        n=1, temperature=t, top_p=self.config.top_p,
                        max_tokens=self.config.max_tokens, logprobs=0,
                        seed=(seed * 1_000_003 + p * n + i) % 2**31,
                    )
                )  # fmt: skip
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        samples = []
        for k, out in enumerate(outputs):
            completion = out.outputs[0]
            ids = tuple(completion.token_ids)
            steps = completion.logprobs or []
            if len(steps) != len(ids):
                raise ExpRLError(f"vLLM returned {len(steps)} logprobs for {len(ids)} tokens")
            logprobs = tuple(float(step[t].logprob) for step, t in zip(steps, ids, strict=True))
            samples.append(Sample(k // n, ids, logprobs, completion.finish_reason == "length"))
        return samples

    def push(self, state_dict: Mapping[str, Any]) -> float:
        """Load the whole ``state_dict`` (HF names) into the engine; return the seconds taken."""
        start = time.perf_counter()
        weights = [(name, tensor.detach()) for name, tensor in state_dict.items()]
        self.llm.collective_rpc(
            "reload_weights",
            kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True},
        )
        if not self.llm.reset_prefix_cache():
            raise ExpRLError("vLLM refused to reset its prefix cache after a weight push")
        return time.perf_counter() - start
