"""The judge from the environment, for trainers that give a reward function no options.

OpenRLHF's in-process ``reward_func`` and agents, and slime's ``--custom-rm-path``
functions, are called with the trainer's own arguments only, so their judge is set by
environment variables:

=============================  ==========================================================
``EXPRL_JUDGE_BASE_URL``       the judge's OpenAI-compatible URL; comma-separated
                               replicas are used in turn
``EXPRL_JUDGE_MODEL``          the judge's model name
``EXPRL_JUDGE_MODE``           ``outcome`` (default) or a process mode
``EXPRL_JUDGE_TEMPLATE``       a built-in template name or a ``.jinja`` file
``EXPRL_GUARDS``               default ``content-gate,neutraliser``
``EXPRL_JUDGE_TOP_LOGPROBS``   default 20; 0 reads the written digit only
``EXPRL_JUDGE_MAX_TOKENS``     the judge's generation limit (default 2048)
``EXPRL_JUDGE_PREFILL``        1: prefill the score line (score-only templates)
``EXPRL_JUDGE_CONSTRAIN``      1: decode only the scale's digits (vLLM structured output)
=============================  ==========================================================

Every caller in a process with the same settings shares one
:class:`~exprl_rewards.adapters.verl_reward.VerlReward`: one judge, one concurrency
budget, one connection pool, one cache.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from ..errors import ConfigError
from .verl_config import shared_reward
from .verl_reward import VerlReward

__all__ = ["ENVIRONMENT", "background_loop", "environment_reward"]

# The environment variables read, and the reward_kwargs-style option each sets.
ENVIRONMENT = {
    "EXPRL_JUDGE_MODE": "mode",
    "EXPRL_JUDGE_TEMPLATE": "template",
    "EXPRL_GUARDS": "guards",
}
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def environment_reward(**overrides: Any) -> VerlReward:
    """The shared reward of this process, configured from the environment (see above);
    ``overrides`` are reward options the trainer's own arguments fix (``group_size``)."""
    options: dict[str, Any] = {"mode": "outcome"}
    options.update(
        {key: os.environ[var] for var, key in ENVIRONMENT.items() if os.environ.get(var)}
    )
    if top := os.environ.get("EXPRL_JUDGE_TOP_LOGPROBS"):
        options["top_logprobs"] = _integer("EXPRL_JUDGE_TOP_LOGPROBS", top) or None
    if limit := os.environ.get("EXPRL_JUDGE_MAX_TOKENS"):
        options["max_tokens"] = _integer("EXPRL_JUDGE_MAX_TOKENS", limit)
    for var, key in (("EXPRL_JUDGE_PREFILL", "prefill"),
                     ("EXPRL_JUDGE_CONSTRAIN", "constrain_scores")):  # fmt: skip
        if flag := os.environ.get(var):
            options[key] = _flag(var, flag)
    urls = [u.strip() for u in os.environ.get("EXPRL_JUDGE_BASE_URL", "").split(",")]
    if any(urls):  # in the options, so that another judge is another shared reward
        options["base_url"] = [u for u in urls if u] if len(urls) > 1 else urls[0]
    if model := os.environ.get("EXPRL_JUDGE_MODEL"):
        options["model"] = model
    options.update(overrides)
    return shared_reward(options)


def _integer(var: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"${var} must be a whole number, got {text!r}") from None


def _flag(var: str, text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"${var} must be 1 or 0, got {text!r}")


def background_loop() -> asyncio.AbstractEventLoop:
    """One event loop for this process's judge, on a daemon thread, for callers that are
    not async themselves (OpenRLHF calls ``reward_func`` in threads)."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="exprl-judge", daemon=True).start()
        return _loop
