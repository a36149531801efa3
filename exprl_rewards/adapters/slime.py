"""slime: ExpRL rewards for ``--custom-rm-path`` and ``--rm-url``.

slime (THUDM/slime) rewards a sample in ``slime.rollout.rm_hub``, in one of three ways:

- ``--custom-rm-path exprl_rewards.adapters.slime.rm``: slime awaits ``rm(args,
  sample)`` as each sample finishes generating (``generate_and_rm``);
- the same with ``--group-rm``: slime awaits ``rm(args, samples)`` once per prompt, when
  its whole group is generated (``generate_and_rm_group``); custom generate functions
  that return several samples get this call too. **Use this one**: the judge sees the
  group at once, and an unscored sample is filled from its own group;
- ``--rm-type remote_rm --rm-url http://HOST:PORT/slime``: slime posts ``{"prompt",
  "response", "label"}`` for each sample to the reward server (:mod:`exprl_rewards.serve`)
  and takes the answer's JSON as the reward: ``{"score": ..., "exprl_unscored": 0|1}``,
  so pass ``--reward-key score`` too. One sample a request: an unscored one is given the
  server's neutral value, flagged.

**The reward** is the judge's calibrated score in [0, 1], a float (slime normalises it per
group for GRPO). The judge is configured from the environment, as slime passes a reward
function its own arguments only: ``EXPRL_JUDGE_BASE_URL``, ``EXPRL_JUDGE_MODEL`` and the
others in :mod:`.environ`. Every call of a process shares one judge, micro-batched.

**An unscored sample** (the judge's answer held no score, a guard fired, no reference)
is never trained on as if scored: ``sample.remove_sample = True`` (slime zeroes its loss
mask) and its reward is the mean of its group's scored samples, so the group's mean and
everyone's advantage are what they would be without it (``neutral``, 0.5, when none of
the group was scored). Without ``--group-rm``, an unscored sample waits for the rest of
its group (``group_index``, ``n_samples_per_prompt`` samples) for at most
``$EXPRL_GROUP_WAIT_S`` seconds (60). Every sample gets ``metadata["exprl"]``:
``unscored``, ``reason``, ``raw`` (the judge's own score) and ``guards``.

**A judge that answered none of a call's samples** raises
:class:`~exprl_rewards.errors.JudgeUnavailable`: slime's rollout fails and so does the
run, as it does when its own remote reward model fails, never with a made-up reward.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from ..rewards.pipeline import RolloutResult
from ..text.rollout import Rollout
from .chat_text import clean_response, question_from_prompt
from .common import check_answered, fill_unscored, judge_raw
from .environ import environment_reward
from .messages import prompt_question
from .openrlhf import read_label

__all__ = ["rm", "slime_answer", "slime_rollout"]


def slime_rollout(
    prompt: Any, response: Any, label: Any, *, rollout_id: str = "0", group_id: str | None = None
) -> Rollout:
    """The rollout a slime sample describes. ``label`` is read as OpenRLHF's labels are
    (:func:`~exprl_rewards.adapters.openrlhf.read_label`): the reference as text or a
    number, or an object with ``solution`` and an optional ``question``; the question is
    otherwise the last user turn of the prompt (text, chat-templated text or messages)."""
    if not isinstance(response, str):
        raise InputError(f"sample {rollout_id}: the response is {type(response).__name__}")
    reference, question = read_label(label, 0)
    if question is None:
        question = prompt_question(prompt, f"sample {rollout_id}")
        question = question_from_prompt(question) if isinstance(prompt, str) else question
    return Rollout(
        id=rollout_id,
        group_id=group_id if group_id is not None else question,
        question=question,
        reference=reference,
        response=clean_response(response),
    )


def slime_answer(value: float, result: RolloutResult) -> dict[str, Any]:
    """The server's ``/slime`` answer: numbers only (``--reward-key score``)."""
    return {
        "score": value,
        "exprl_unscored": int(result.score is None),
        "exprl_raw": judge_raw(result),
    }


def _metadata(result: RolloutResult) -> dict[str, Any]:
    return {
        "unscored": result.score is None,
        "reason": result.reason,
        "raw": judge_raw(result),
        "guards": [hit.guard for hit in result.guards],
    }


def _rollout(sample: Any) -> Rollout:
    group = getattr(sample, "group_index", None)
    return slime_rollout(
        sample.prompt,
        sample.response,
        sample.label,
        rollout_id=str(getattr(sample, "index", None)),
        group_id=None if group is None else str(group),
    )


def _mark(sample: Any, value: float, result: RolloutResult) -> float:
    metadata = getattr(sample, "metadata", None)
    if isinstance(metadata, dict):
        metadata["exprl"] = _metadata(result)
    if result.score is None:
        sample.remove_sample = True
    return value


async def _group(samples: list[Any]) -> list[float]:
    reward = environment_reward()
    rollouts = [_rollout(s) for s in samples]
    results = [r for _, r, _ in await asyncio.gather(*map(reward.result_one, rollouts))]
    check_answered(results, "slime")
    values = fill_unscored(results, "group-mean", reward.neutral)  # the call is whole groups
    return [_mark(s, v, r) for s, v, r in zip(samples, values, results, strict=True)]


async def _one(args: Any, sample: Any) -> float:
    size = int(getattr(args, "n_samples_per_prompt", 1) or 1)
    wait = float(os.environ.get("EXPRL_GROUP_WAIT_S", "60"))
    reward = environment_reward(group_size=size, group_wait_s=wait)
    value, result, _ = await reward.result_one(_rollout(sample))
    check_answered([result], "slime")
    return _mark(sample, value, result)


async def rm(args: Any, sample: Any, **kwargs: Any) -> float | list[float]:
    """slime's custom reward: one sample's reward, or a list's (``--group-rm``)."""
    if isinstance(sample, list):
        if any(isinstance(s, list) for s in sample):
            raise InputError(
                "--group-rm with a generate function that returns several samples per "
                "rollout: slime cannot give their group its rewards; drop --group-rm"
            )
        return await _group(sample)
    if isinstance(sample, Mapping):
        raise InputError("slime passed a mapping, not a Sample; is --custom-rm-path right?")
    return await _one(args, sample)
