"""A :class:`~exprl_rewards.adapters.verl_reward.VerlReward` from verl's
``reward_kwargs``, one per configuration and process.

The judge is ``base_url`` and ``model`` in ``reward_kwargs``, else
``$EXPRL_JUDGE_BASE_URL`` and ``$EXPRL_JUDGE_MODEL``, else verl's own reward router: with
``reward.reward_model.enable=True`` verl serves a judge on its own vLLM replicas behind a
router whose port is chosen at run time, and passes its address to every call
(``reward_router_address``). The model is then ``model`` if given, or the one model the
router's ``/v1/models`` lists.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import openai

from ..errors import ConfigError
from ..judges.guards import DEFAULT_GUARDS, get_guards
from ..judges.openai import OpenAIJudge
from ..rewards.calibration import load_calibrator
from ..rewards.canaries import Canaries, HackAlarm
from ..rewards.pipeline import RewardPipeline
from .verl_reward import VerlReward

__all__ = ["judge_options", "shared_reward"]

# Keyword arguments verl's reward managers add to the call, not ours.
VERL_EXTRAS = ("reward_router_address", "reward_model_tokenizer")


def judge_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``reward_kwargs`` from a call: verl's own extras dropped; its reward router kept
    (``router``) when no judge URL is given."""
    options = {k: v for k, v in kwargs.items() if k not in VERL_EXTRAS}
    router = kwargs.get("reward_router_address")
    if router and not options.get("base_url") and not os.environ.get("EXPRL_JUDGE_BASE_URL"):
        options["router"] = str(router)
    return options


def _router_model(base_url: str) -> str:
    """The one model a router serves, from its ``/v1/models``."""
    try:
        client = openai.OpenAI(base_url=base_url, api_key="EMPTY", timeout=30.0, max_retries=2)
        ids = [m.id for m in client.models.list()]
    except openai.OpenAIError as e:
        raise ConfigError(
            f"verl's reward router at {base_url} did not list its models ({e}); "
            "set reward_kwargs.model"
        ) from None
    if len(ids) != 1:
        raise ConfigError(
            f"verl's reward router at {base_url} serves {ids or 'no model'}; "
            "set reward_kwargs.model to the judge's name"
        )
    return str(ids[0])


@functools.lru_cache(maxsize=8)
def _default(config: str) -> VerlReward:
    options: dict[str, Any] = json.loads(config)
    router = options.pop("router", None)
    base_url = options.pop("base_url", None) or os.environ.get("EXPRL_JUDGE_BASE_URL")
    model = options.pop("model", None) or os.environ.get("EXPRL_JUDGE_MODEL")
    if not base_url and router:
        base_url = f"http://{router}/v1"
        model = model or _router_model(base_url)
    if not base_url or not model:
        raise ConfigError(
            "no judge configured: set reward_kwargs base_url and model (or "
            "$EXPRL_JUDGE_BASE_URL and $EXPRL_JUDGE_MODEL)"
        )
    judge_keys = ("top_logprobs", "concurrency", "timeout", "max_tokens", "prefill", "cache",
                  "constrain_scores")  # fmt: skip
    judge_options = {k: options.pop(k) for k in judge_keys if k in options}
    judge_options.setdefault("top_logprobs", 20)
    judge = OpenAIJudge(model, base_url=base_url, **judge_options)
    reward_keys = ("unscored", "neutral", "batch_size", "batch_wait_s", "group_size",
                   "group_wait_s")  # fmt: skip
    reward_options = {k: options.pop(k) for k in reward_keys if k in options}
    share = options.pop("canary_share", None)
    window, rise = options.pop("alarm_window", 3), options.pop("alarm_rise", 0.05)
    if share:
        # judged as they arrive: carry the share over small micro-batches
        reward_options["canaries"] = Canaries(float(share), minimum=0)
        reward_options["alarm"] = HackAlarm(window=int(window), rise=float(rise))
    if "calibration" in options:
        options["calibrator"] = load_calibrator(options.pop("calibration"))
    options["guards"] = get_guards(options.pop("guards", ",".join(DEFAULT_GUARDS)))
    return VerlReward(RewardPipeline(judge, **options), **reward_options)


def shared_reward(kwargs: Mapping[str, Any]) -> VerlReward:
    """The one :class:`VerlReward` of this process for these ``reward_kwargs``: every call
    with the same options shares its judge (concurrency budget, connections, cache)."""
    return _default(json.dumps(dict(kwargs), sort_keys=True, default=str))
