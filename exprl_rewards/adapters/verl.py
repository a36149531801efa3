"""verl: ``compute_score`` functions and process rewards as a token-level matrix.

verl 0.9 always scores through its reward loop (``RewardLoopManager``): each
``RewardLoopWorker`` starts one task per sample on its event loop, and the reward
manager (``reward.reward_manager.name=naive``) awaits a custom ``compute_score``
(``reward.custom_reward_function.path`` and ``.name``, options from
``reward.custom_reward_function.reward_kwargs``) once per sample:

- :func:`compute_score` (async, for that loop): all samples of a process share one
  judge, so one concurrency budget, one connection pool and one cache; the calls that
  arrive together are **micro-batched** into one pipeline batch (up to ``batch_size``,
  waiting at most ``batch_wait_s``). On verl's default agent-loop path each response is
  scored when its rollout finishes, so a micro-batch rarely holds a whole group: with
  ``group_size`` (set it to ``actor_rollout_ref.rollout.n``) an unscored response is
  answered only once its whole group is judged, with the group's mean;
- :func:`compute_score_sync`: the same per sample, for verl's legacy
  ``NaiveRewardManager`` (``verl.workers.reward_manager``), which calls it in a thread;
- :func:`compute_score_batch`: verl's legacy ``BatchRewardManager`` (``batch``), once
  per batch. The reward loop has no ``batch`` manager.

Both return dicts with the **same keys for every sample**, as verl requires to build
its ``reward_extra_info``: ``score`` (the reward), ``exprl_raw`` (the judge's score on
its scale, NaN when unscored), ``exprl_unscored`` (1.0 when the judge gave no score).
With ``canary_share`` in ``reward_kwargs`` (:mod:`exprl_rewards.rewards.canaries`), each judge
batch also grades that share of canaries (never returned to verl) and every sample's
dict carries its batch's ``exprl_canary_reward``, ``exprl_honest_reward``,
``exprl_verifier_accuracy``, ``exprl_canary_share`` and ``exprl_hack_alarm``
(``alarm_window``, ``alarm_rise``); an alarm is logged as a warning. verl 0.9 puts
``reward_extra_info`` in its rollout dumps (``trainer.rollout_data_dir``) and its
validation metrics, not its training metrics.

The hidden reference comes from ``extra_info["solution"]`` and the question from
``extra_info["question"]`` (the released ExpRL data layout); ``ground_truth`` is the
fallback reference. verl needs a number for every response, so an unscored response
gets a **neutral** value, never a silent 0: by default the mean score of the scored
responses to the same question in the batch (zero advantage under GRPO), or
``neutral`` (0.5) when none was scored; ``exprl_unscored`` says which ones.

:class:`VerlReward` holds the pipeline; the module-level functions build one from
``reward_kwargs`` (``base_url``, ``model``, ``mode``, ``template``, ``slicer``,
``calibration``, ``cache``, ``guards``: default ``content-gate,neutraliser`` as in the
score CLI, ``"none"`` for none...) or ``$EXPRL_JUDGE_BASE_URL`` / ``$EXPRL_JUDGE_MODEL``,
once per configuration and process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .offsets import token_offsets
from .verl_config import judge_options, shared_reward
from .verl_reward import VerlReward

__all__ = [
    "VerlReward",
    "compute_score",
    "compute_score_batch",
    "compute_score_sync",
    "shared_reward",
    "token_offsets",
]


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """verl's per-sample custom reward for its reward loop: micro-batched on one judge.

    ``kwargs`` are ``reward_kwargs``: the judge (``base_url``, ``model``, ...), the
    pipeline (``mode``, ``template``, ...) and the batching (``batch_size``,
    ``batch_wait_s``). Extra keyword arguments verl adds are ignored.
    """
    kwargs = judge_options(kwargs)
    return await shared_reward(kwargs).score_one(solution_str, ground_truth, extra_info)


def compute_score_sync(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """The per-sample reward for verl's legacy managers, which call it from a thread."""
    kwargs = judge_options(kwargs)
    return shared_reward(kwargs).score_batch([solution_str], [ground_truth], [extra_info])[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    **kwargs: Any,
) -> list[dict[str, float]]:
    """verl's batch custom reward (``reward_manager=batch``): the batch judged at once."""
    reward = shared_reward(judge_options(kwargs))
    return reward.score_batch(solution_strs, ground_truths, extra_infos)
