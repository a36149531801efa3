"""ExpRL-Process inside verl 0.9: a reward manager for its reward loop, and the process
advantage estimators registered for its own ``compute_advantage``.

This module imports verl and torch; verl loads it (``pkg://`` below) and nothing else in
``exprl_rewards`` does. Configure verl with::

    reward.reward_manager.source=importlib
    reward.reward_manager.name=ExpRLProcessRewardManager
    reward.reward_manager.module.path=pkg://exprl_rewards.adapters.verl_process
    +reward.custom_reward_function.reward_kwargs.base_url=...  (model, mode, slicer...)
    algorithm.adv_estimator=exprl_delta      # or exprl_end, exprl_group, exprl_prefix,
                                             # exprl_rtg

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
``token_level_rewards``, calls :func:`~exprl_rewards.advantages.process_advantages`
(DeltaNorm, EndNorm, GroupNorm, the released prefix variant, return-to-go) and gives
each step's advantage to its tokens (the last step also to any tokens after its end).
An unscored response gets 0 advantage on every token (masked, as released).

Limits: use verl's KL as a loss (``use_kl_in_reward=False``, verl's GRPO default); a KL
penalty in the reward would change every token and hide the step ends. A step with no
token of its own (shorter than one token) shares its end with the next step, and the
later step's score is kept.
"""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

from ..advantages import ProcessEstimator, process_advantages
from ..errors import ConfigError
from .offsets import token_offsets
from .verl import shared_reward

__all__ = ["STEP_ZERO", "ExpRLProcessRewardManager", "process_estimator"]

STEP_ZERO = 1e-30  # a step end whose score is 0
_TINY = 1e-20  # below this a step end reads back as 0


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
        steps = []
        if result.score is not None:
            steps = [
                (s.tokens[1] - 1, float(s.score))
                for s in result.segments
                if s.tokens is not None and s.tokens[1] > s.tokens[0] and s.score is not None
            ]
        return {
            "reward_score": steps,
            "reward_extra_info": {
                "score": value,
                "exprl_unscored": float(result.score is None),
                "exprl_steps": float(len(result.segments)),
            },
        }

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[Any]) -> torch.Tensor:
        """Each step's score at its last token (``STEP_ZERO`` for a 0), 0 elsewhere."""
        rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        for row, steps in enumerate(scores):
            for end, value in steps:
                rm_scores[row, end] = value if value != 0 else STEP_ZERO
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
