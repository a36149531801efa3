"""ExpRL-Process inside verl 0.9: a reward manager for its reward loop, an agent-loop
manager that keeps the steps, and the process advantage estimators registered for its
own ``compute_advantage``.

This module imports verl and torch; verl loads it (``pkg://`` below) and nothing else in
``exprl_rewards`` does. Configure verl with::

    reward.reward_manager.source=importlib
    reward.reward_manager.name=ExpRLProcessRewardManager
    reward.reward_manager.module.path=pkg://exprl_rewards.adapters.verl_process
    +actor_rollout_ref.rollout.agent.agent_loop_manager_class=\
        exprl_rewards.adapters.verl_process.ExpRLAgentLoopManager
    +reward.custom_reward_function.reward_kwargs.base_url=...  (model, mode, slicer...)
    algorithm.adv_estimator=exprl_delta      # or exprl_end, exprl_group, exprl_prefix,
                                             # exprl_rtg

**Two paths, one matrix.** With no verl-managed reward model (the default), verl hands
the reward workers to its agent loop, which scores each trajectory as it finishes and
keeps one number per response (``reward_score: Optional[float]``, written at the last
token). The manager therefore returns a :class:`StepScore`: a float (the response's
reward) that also carries its steps, and the same steps as JSON in
``reward_extra_info["exprl_steps"]``. :class:`ExpRLAgentLoopManager` (verl's
``AgentLoopManager`` with one step added) rewrites each row of ``rm_scores`` from those
steps; the reward manager refuses to start on the agent-loop path without it, since
verl would otherwise train on one step per response. With a verl-managed reward model
(the colocated path), verl calls :meth:`ExpRLProcessRewardManager.assemble_rm_scores`,
which reads the steps off the :class:`StepScore` values.

**The reward manager** (:class:`ExpRLProcessRewardManager`) judges each response per
step (``mode`` ``process-segment`` by default, or ``process-prefix``), aligned to the
policy's tokens (:func:`~exprl_rewards.adapters.offsets.token_offsets`), micro-batched on
the process's shared judge (see :mod:`exprl_rewards.adapters.verl`). Its
``assemble_rm_scores`` returns verl's ``[batch, response_length]`` reward matrix with
**each step's calibrated score at the step's last token** and 0 elsewhere. A step
scored exactly 0 is written as :data:`STEP_ZERO` (1e-30), so that every step end is a
non-zero token and the step structure survives in the matrix; an unscored response's
row is all 0 (no steps), flagged ``exprl_unscored`` in verl's reward extra info.

**The estimators** run in verl's ``compute_advantage`` on the driver, over the whole
batch, so groups (``uid``) are whole. Each reads the step ends and scores back from
``token_level_rewards``, calls :func:`~exprl_rewards.rewards.advantages.process_advantages`
(DeltaNorm, EndNorm, GroupNorm, the released prefix variant, return-to-go) and gives
each step's advantage to its tokens (the last step also to any tokens after its end).
An unscored response gets 0 advantage on every token (masked, as released).

Limits: use verl's KL as a loss (``use_kl_in_reward=False``, verl's GRPO default); a KL
penalty in the reward would change every token and hide the step ends. A step with no
token of its own (shorter than one token) shares its end with the next step, and the
later step's score is kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import AgentLoopManager
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

from ..errors import ConfigError
from ..rewards.advantages import ProcessEstimator, process_advantages
from .offsets import token_offsets
from .verl import shared_reward

__all__ = [
    "MANAGER_CLASS",
    "STEP_ZERO",
    "ExpRLAgentLoopManager",
    "ExpRLProcessRewardManager",
    "StepScore",
    "process_estimator",
    "write_steps",
]

STEP_ZERO = 1e-30  # a step end whose score is 0
_TINY = 1e-20  # below this a step end reads back as 0
MANAGER_CLASS = "exprl_rewards.adapters.verl_process.ExpRLAgentLoopManager"
Steps = tuple[tuple[int, float], ...]  # (last token of the step, its calibrated score)


class StepScore(float):
    """A response's reward as one float, carrying its steps (``.steps``).

    verl's agent loop stores it where it expects a number; verl's colocated path hands it
    back to :meth:`ExpRLProcessRewardManager.assemble_rm_scores`, which reads the steps.
    It pickles with its steps (Ray sends it between processes).

    >>> s = StepScore(0.5, ((3, 0.25), (9, 0.75)))
    >>> float(s), s.steps
    (0.5, ((3, 0.25), (9, 0.75)))
    """

    steps: Steps

    def __new__(cls, value: float, steps: Steps) -> StepScore:
        out = super().__new__(cls, value)
        out.steps = tuple((int(e), float(v)) for e, v in steps)
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepScore, (float(self), self.steps))


def _fill(rm_scores: torch.Tensor, row: int, steps: Sequence[Sequence[float]]) -> None:
    """Row ``row`` of ``rm_scores`` holds each step's score at its end, 0 elsewhere."""
    rm_scores[row] = 0.0
    for end, value in steps:
        rm_scores[row, int(end)] = value if value != 0 else STEP_ZERO


def write_steps(data: DataProto) -> DataProto:
    """Rewrite ``rm_scores`` from ``exprl_steps`` (what the agent loop kept of each
    response's steps); a batch without them is returned as it is."""
    steps = data.non_tensor_batch.get("exprl_steps")
    if steps is None or "rm_scores" not in data.batch.keys():  # noqa: SIM118 (a TensorDict)
        return data
    rm_scores = data.batch["rm_scores"]
    for row, encoded in enumerate(steps):
        _fill(rm_scores, row, json.loads(str(encoded)))
    return data


class ExpRLAgentLoopManager(AgentLoopManager):
    """verl's ``AgentLoopManager``, with each response's steps written back into the
    reward matrix (:func:`write_steps`) before verl computes advantages."""

    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        return write_steps(await super().generate_sequences(prompts))


def _check_agent_loop(config: Any) -> None:
    """Refuse the agent-loop path without :class:`ExpRLAgentLoopManager`."""
    use_rm = OmegaConf.select(config, "reward.reward_model.enable", default=False)
    pool = OmegaConf.select(config, "reward.reward_model.enable_resource_pool", default=False)
    rollout = OmegaConf.select(config, "actor_rollout_ref.rollout", default=None)
    if rollout is None or (use_rm and not pool):  # colocated: assemble_rm_scores
        return
    name = OmegaConf.select(config, "actor_rollout_ref.rollout.agent.agent_loop_manager_class")
    if name:
        from verl.utils.import_utils import load_class_from_fqn

        if issubclass(load_class_from_fqn(name, "AgentLoopManager"), ExpRLAgentLoopManager):
            return
    raise ConfigError(
        "verl's agent loop keeps one number per response, so process rewards need"
        f" +actor_rollout_ref.rollout.agent.agent_loop_manager_class={MANAGER_CLASS}"
        f" (it writes the steps back; got {name!r})"
    )


class ExpRLProcessRewardManager(RewardManagerBase):
    """verl's reward manager for ExpRL process rewards (see the module docs)."""

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
    ) -> None:
        _check_agent_loop(config)  # before the base class takes an event loop
        super().__init__(config, tokenizer, compute_score)
        custom = config.reward.get("custom_reward_function") or {}
        kwargs = dict(custom.get("reward_kwargs") or {})
        kwargs.setdefault("mode", "process-segment")
        self.reward = shared_reward(kwargs)
        if self.reward.pipeline.mode == "outcome":
            raise ConfigError(
                "ExpRLProcessRewardManager grades steps: set reward_kwargs.mode to"
                " process-segment or process-prefix (for outcome rewards use compute_score)"
            )

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        item = data[-1:][0]
        responses = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        ids = responses[:valid].tolist()
        text, offsets = await self.loop.run_in_executor(None, token_offsets, self.tokenizer, ids)
        extra = dict(item.non_tensor_batch.get("extra_info") or {})
        truth = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        (rollout,) = self.reward.rollouts([text], [truth], [extra], [offsets])
        value, result, _ = await self.reward.result_one(rollout)
        steps: Steps = ()
        if result.score is not None:
            steps = tuple(
                (s.tokens[1] - 1, float(s.score))
                for s in result.segments
                if s.tokens is not None and s.tokens[1] > s.tokens[0] and s.score is not None
            )
        return {
            "reward_score": StepScore(value, steps),
            "reward_extra_info": {
                "score": value,
                "exprl_unscored": float(result.score is None),
                "exprl_num_steps": float(len(result.segments)),
                "exprl_steps": json.dumps([list(s) for s in steps]),
            },
        }

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[Any]) -> torch.Tensor:
        """Each step's score at its last token (``STEP_ZERO`` for a 0), 0 elsewhere:
        verl's colocated path, with the :class:`StepScore` values of :meth:`run_single`."""
        rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        for row, score in enumerate(scores):
            _fill(rm_scores, row, getattr(score, "steps", ()))
        return rm_scores


def _steps(rewards: np.ndarray, mask: np.ndarray) -> tuple[list[np.ndarray], list[list[float]]]:
    """Each row's step-end positions and scores, read back from the reward matrix."""
    ends, rows = [], []
    for r, m in zip(rewards, mask, strict=True):
        pos = np.flatnonzero((r != 0) & m)
        values = r[pos].astype(np.float64)
        values[np.abs(values) < _TINY] = 0.0
        ends.append(pos)
        rows.append(values.tolist() if pos.size else [float("nan")])  # no steps: masked
    return ends, rows


def process_estimator(kind: ProcessEstimator, **options: Any) -> Any:
    """A verl advantage estimator running the library's process estimator ``kind``."""

    def estimate(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: Any = None,
        config: Any = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = token_level_rewards.detach().float().cpu().numpy()
        mask = response_mask.detach().cpu().numpy().astype(bool)
        ends, rows = _steps(rewards, mask)
        groups = list(index) if index is not None else None
        result = process_advantages(rows, kind, group_ids=groups, **options)
        out = np.zeros_like(rewards, dtype=np.float32)
        for b, (pos, values) in enumerate(zip(ends, result.values.rows(), strict=True)):
            if not result.mask[b] or not pos.size:
                continue
            last = int(np.flatnonzero(mask[b])[-1]) + 1
            start = 0
            for k, (end, value) in enumerate(zip(pos, values, strict=True)):
                stop = last if k == len(pos) - 1 else int(end) + 1
                out[b, start:stop] = value
                start = int(end) + 1
        advantages = torch.from_numpy(out).to(token_level_rewards.device) * response_mask
        return advantages, advantages

    estimate.__name__ = f"exprl_{kind}"
    return estimate


# Registered once per process, whichever way verl loads this module.
for _kind in get_args(ProcessEstimator):
    if f"exprl_{_kind}" not in ADV_ESTIMATOR_REGISTRY:
        register_adv_est(f"exprl_{_kind}")(process_estimator(_kind))
