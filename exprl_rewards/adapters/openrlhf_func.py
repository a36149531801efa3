"""OpenRLHF without a server: an in-process ``reward_func`` for ``--reward.remote_url``.

OpenRLHF 0.11's ``SingleTurnAgentExecutor`` loads ``reward_func(queries, prompts,
labels)`` from a ``.py`` file given as ``--reward.remote_url`` and calls it in a thread
(``asyncio.to_thread``), one sample per call, many calls at once. A reward file that
re-exports :func:`reward_func` is all it needs::

    # exprl_openrlhf_reward.py
    from exprl_rewards.adapters.openrlhf_func import reward_func

- **The judge** comes from the environment (OpenRLHF passes no options):
  ``EXPRL_JUDGE_BASE_URL`` (comma-separated replicas, used in turn),
  ``EXPRL_JUDGE_MODEL`` and the others in :mod:`.environ`.
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
from collections.abc import Sequence
from typing import Any

from .common import check_answered
from .environ import ENVIRONMENT, background_loop, environment_reward
from .openrlhf import openrlhf_answer, openrlhf_batch

__all__ = ["ENVIRONMENT", "environment_reward", "reward_func"]


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any]
) -> dict[str, Any]:
    """OpenRLHF's reward for its samples (see the module docs for the answer)."""
    batch = openrlhf_batch({"query": list(queries), "prompts": list(prompts),
                            "labels": list(labels)})  # fmt: skip
    reward = environment_reward()
    loop = background_loop()
    pending = [asyncio.run_coroutine_threadsafe(reward.result_one(r), loop) for r in batch.rollouts]
    results = [future.result()[1] for future in pending]
    check_answered(results, "OpenRLHF")
    return openrlhf_answer(batch, results, reward.unscored, reward.neutral)
