"""OpenRLHF without a server: an in-process ``reward_func`` for ``--reward.remote_url``.

OpenRLHF 0.11's ``SingleTurnAgentExecutor`` loads ``reward_func(queries, prompts,
labels)`` from a ``.py`` file given as ``--reward.remote_url`` and calls it in a thread
(``asyncio.to_thread``), one sample per call, many calls at once. A reward file that
re-exports :func:`reward_func` is all it needs::

    # exprl_openrlhf_reward.py
    from exprl_rewards.adapters.openrlhf_func import reward_func

- **The judge** comes from the environment (OpenRLHF passes no options):
  ``EXPRL_JUDGE_BASE_URL`` (comma-separated replicas, used in turn),
  ``EXPRL_JUDGE_MODEL``, ``EXPRL_JUDGE_MODE`` (default ``outcome``),
  ``EXPRL_JUDGE_TEMPLATE``, ``EXPRL_GUARDS`` (default ``content-gate,neutraliser``),
  ``EXPRL_JUDGE_TOP_LOGPROBS`` (default 20; 0 reads the written digit only).
- **One judge per process**: every call goes to one background event loop, where the
  calls that arrive together are micro-batched into one pipeline batch (the same
  micro-batcher as the verl adapter's): one concurrency budget, one connection pool,
  one cache.
- **The answer** is the reward server's (:func:`~exprl_rewards.adapters.openrlhf.openrlhf_answer`):
  numbers only, ``extra_logs.exprl_unscored`` and ``exprl_backend_failed`` flags.
- **A judge that answered none of a call's samples** raises
  :class:`~exprl_rewards.errors.JudgeUnavailable` and logs it as an error: OpenRLHF then
  keeps the sample without a reward, as it does when a reward server is down, never
  with a made-up one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import JudgeUnavailable
from .openrlhf import openrlhf_answer, openrlhf_batch
from .verl_config import shared_reward
from .verl_reward import VerlReward

__all__ = ["ENVIRONMENT", "environment_reward", "reward_func"]

log = logging.getLogger("exprl_rewards")
# The environment variables read, and the reward_kwargs-style option each sets.
ENVIRONMENT = {
    "EXPRL_JUDGE_MODE": "mode",
    "EXPRL_JUDGE_TEMPLATE": "template",
    "EXPRL_GUARDS": "guards",
}
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    """The one event loop of this process's judge, on a daemon thread."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="exprl-judge", daemon=True).start()
        return _loop


def environment_reward() -> VerlReward:
    """The shared reward of this process, configured from the environment (see above)."""
    options: dict[str, Any] = {"mode": "outcome"}
    options.update(
        {key: os.environ[var] for var, key in ENVIRONMENT.items() if os.environ.get(var)}
    )
    if top := os.environ.get("EXPRL_JUDGE_TOP_LOGPROBS"):
        options["top_logprobs"] = int(top) or None
    urls = os.environ.get("EXPRL_JUDGE_BASE_URL", "")
    if "," in urls:
        options["base_url"] = [u.strip() for u in urls.split(",") if u.strip()]
    return shared_reward(options)


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any]
) -> dict[str, Any]:
    """OpenRLHF's reward for its samples (see the module docs for the answer)."""
    batch = openrlhf_batch({"query": list(queries), "prompts": list(prompts),
                            "labels": list(labels)})  # fmt: skip
    reward = environment_reward()
    loop = _background_loop()
    pending = [asyncio.run_coroutine_threadsafe(reward.result_one(r), loop) for r in batch.rollouts]
    results = [future.result()[1] for future in pending]
    failed = [r for r in results if r.backend_failed]
    for r in failed:
        log.error("the judge never answered an OpenRLHF sample: %s", r.reason)
    if results and len(failed) == len(results):
        raise JudgeUnavailable(
            f"the judge answered none of {len(results)} sample(s): {failed[0].reason}; "
            "check EXPRL_JUDGE_BASE_URL and the judge server"
        )
    return openrlhf_answer(batch, results, reward.unscored, reward.neutral)
