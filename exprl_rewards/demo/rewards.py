"""From sampled rollouts to per-token advantages, through the library's own estimators.

Three kinds of reward, as in the paper:

- ``sparse``: 1 for a correct rollout, else 0; GRPO over each prompt's group.
- ``outcome`` (ExpRL-Outcome): the judge grades the whole rollout against the reference
  (1-5, normalised); GRPO over the group
  (:func:`~exprl_rewards.rewards.advantages.outcome_advantages`).
- ``process-ESTIMATOR`` (ExpRL-Process): the judge grades every prefix ending at a step
  boundary; the step scores go through
  :func:`~exprl_rewards.rewards.advantages.process_advantages` (``delta`` as released, ``end``,
  ``group``, ``rtg``, ``rtg-norm``: return-to-go on group-standardised increments) and
  :func:`~exprl_rewards.text.tokens.broadcast_to_tokens` spreads each step's value over its
  tokens, exactly as the reward pipeline does for a trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rewards.advantages import outcome_advantages, process_advantages
from ..text.ragged import Ragged
from ..text.tokens import broadcast_to_tokens
from .world import BoolArray, FloatArray, JudgeSim, Rollouts, World

__all__ = ["METHODS", "Reward", "reward"]

PROCESS = ("delta", "end", "group", "rtg", "rtg-norm")
METHODS = ("sparse", "outcome", *(f"process-{e}" for e in PROCESS))


@dataclass(frozen=True)
class Reward:
    """One step's rewards: per-token advantages ``[prompts, group, max_len]`` (NaN: not
    trained) and each rollout's reward as the method sees it (for process: the last step's)."""

    advantages: FloatArray
    rollout_reward: FloatArray  # [prompts, group]


def _over_tokens(world: World, rollouts: Rollouts, values: FloatArray) -> FloatArray:
    """The same value on every token of a rollout."""
    valid = np.arange(world.max_len) < rollouts.length[..., None]
    return np.where(valid, values[..., None], np.nan)


def _outcome(world: World, rollouts: Rollouts, scores: FloatArray) -> Reward:
    groups = np.repeat(np.arange(world.prompts), scores.shape[1])
    adv = outcome_advantages(scores.ravel(), groups).values.reshape(scores.shape)
    return Reward(_over_tokens(world, rollouts, adv), scores)


def _process(
    world: World,
    rollouts: Rollouts,
    judge: JudgeSim,
    estimator: str,
    step_tokens: int,
    rng: np.random.Generator,
) -> Reward:
    prompts, group = rollouts.length.shape
    steps = -(-rollouts.length // step_tokens)  # ceil: a last, shorter step
    most = int(steps.max())
    upto = np.minimum(np.arange(1, most + 1) * step_tokens, rollouts.length[..., None])
    if judge.semantics == "segment":
        progress, quirk, judged = _segments(world, rollouts, step_tokens, most)
    else:
        progress = world.prefix_progress(rollouts, upto, judge.pending_weight)
        quirk, judged = rollouts.quirk_at[..., None] < upto, upto
    scores = judge.score(progress, judged / world.max_len, quirk, rng)  # [P, G, most]
    real = np.arange(most) < steps[..., None]
    step_scores = Ragged(scores[real], steps.ravel())
    group_ids = np.repeat(np.arange(prompts), group)
    name, options = estimator, {}
    if estimator == "rtg-norm":
        name, options = "rtg", {"normalize": True}
    adv = process_advantages(step_scores, name, group_ids=group_ids, **options)  # type: ignore[arg-type]
    sizes = np.minimum(upto, rollouts.length[..., None]) - np.concatenate(
        [np.zeros((prompts, group, 1), dtype=np.int64), upto[..., :-1]], axis=-1
    )
    per_token = broadcast_to_tokens(
        adv.values, Ragged(sizes[real], steps.ravel()), width=world.max_len, fill=np.nan
    )
    values = np.where(per_token.mask, per_token.values, np.nan)
    last = scores[np.arange(prompts)[:, None], np.arange(group)[None, :], steps - 1]
    return Reward(values.reshape(prompts, group, world.max_len), last)


def _segments(
    world: World, rollouts: Rollouts, step_tokens: int, most: int
) -> tuple[FloatArray, BoolArray, FloatArray]:
    """Each step alone: the mean credit of its tokens (:class:`~.world.World`: 1 right
    where it stands, 1/2 irrelevant, 0 wrong), whether it holds the quirk token, and its
    length in tokens; ``[P, G, most]`` each."""
    width = most * step_tokens
    valid = np.arange(width) < rollouts.length[..., None]
    credit = np.zeros((*rollouts.length.shape, width))
    credit[..., : world.max_len] = rollouts.credit[..., :width]
    tokens = np.full((*rollouts.length.shape, width), world.eos, dtype=np.int64)
    tokens[..., : world.max_len] = rollouts.tokens[..., :width]
    shape = (*rollouts.length.shape, most, step_tokens)
    size = valid.reshape(shape).sum(axis=-1)
    share = np.where(valid, credit, 0.0).reshape(shape).sum(axis=-1) / np.maximum(size, 1)
    quirk = (valid & (tokens == world.quirk)).reshape(shape).any(axis=-1)
    return share, quirk, size.astype(np.float64)


def reward(
    method: str,
    world: World,
    rollouts: Rollouts,
    judge: JudgeSim,
    rng: np.random.Generator,
    *,
    step_tokens: int = 2,
) -> Reward:
    """Advantages of ``rollouts`` under ``method`` (one of :data:`METHODS`)."""
    if method == "sparse":
        correct = rollouts.matched == world.lengths[:, None] + 1
        return _outcome(world, rollouts, correct.astype(np.float64))
    if method == "outcome":
        progress = world.prefix_progress(rollouts, rollouts.length[..., None], judge.pending_weight)
        quirk = rollouts.quirk_at < rollouts.length
        lengths = rollouts.length / world.max_len
        return _outcome(world, rollouts, judge.score(progress[..., 0], lengths, quirk, rng))
    if method.startswith("process-") and method[8:] in PROCESS:
        return _process(world, rollouts, judge, method[8:], step_tokens, rng)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
