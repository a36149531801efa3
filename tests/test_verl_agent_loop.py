"""ExpRL-Process on the path a verl 0.9.1 ``main_ppo`` run takes by default: with no
verl-managed reward model, the reward workers are handed to the agent loop, which scores
each trajectory as it finishes (``AgentLoopWorker._compute_score``), keeps one number
per response (``reward_score: Optional[float]``) and writes it at the last token
(``_postprocess``). Driven here through verl's real ``AgentLoopWorker`` (built by its own
constructor from verl's generated default config), its ``_agent_loop_postprocess`` and
``_postprocess``, verl's real ``AgentLoopManager.generate_sequences`` in our subclass,
verl's ``RewardLoopWorker`` with our process manager, and verl's ``compute_advantage``.
The judge is the fault server's deterministic one over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_server import FaultServer

from exprl_rewards.errors import ConfigError
from exprl_rewards.judges.local_model import default_model_dir
from exprl_rewards.rewards.advantages import process_advantages

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import verl
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.experimental.agent_loop.agent_loop import (
        AgentLoopMetrics,
        AgentLoopOutput,
        AgentLoopWorker,
    )
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.ray_trainer import compute_advantage
    from verl.utils.ray_utils import get_event_loop

    from exprl_rewards.adapters.verl_process import (
        MANAGER_CLASS,
        ExpRLAgentLoopManager,
        ExpRLProcessRewardManager,
    )

RESPONSES = [
    "a [[score 2]]\nb [[score 4]]",
    "a [[score 1]]\nb [[score 5]]\nc [[score 3]]",
    "a [[score 5]]\nb [[score none]]",
    "a [[score 3]]",
]
STEPS = [[0.25, 0.75], [0.0, 1.0, 0.5], None, [0.5]]  # (N - 1) / 4; None: unscored
GROUPS = [0, 0, 1, 1]


def ppo_config(fault: FaultServer, *, manager: str | None = MANAGER_CLASS) -> Any:
    """verl's own generated PPO config with the docs' process-reward keys (docs/trainers/verl.md)."""
    cfg = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    cfg.actor_rollout_ref.model.path = str(default_model_dir())
    cfg.actor_rollout_ref.rollout.name = "vllm"
    cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class = manager
    cfg.data.max_prompt_length, cfg.data.max_response_length = 16, 32
    cfg.reward.reward_manager.source = "importlib"
    cfg.reward.reward_manager.name = "ExpRLProcessRewardManager"
    cfg.reward.reward_manager.module.path = "pkg://exprl_rewards.adapters.verl_process"
    cfg.reward.custom_reward_function.reward_kwargs = {
        "base_url": fault.url, "model": "marks", "mode": "process-segment",
        "slicer": "newline", "top_logprobs": None, "guards": "none",
    }  # fmt: skip
    cfg.algorithm.adv_estimator = "exprl_delta"
    return cfg


class _Remote:
    """What ``ray.remote`` gives the agent loop: ``handle.method.remote(...)`` awaitable.
    The methods run in this process, on verl's own objects."""

    def __init__(self, method: Any) -> None:
        self.remote = method


class _Handle:
    def __init__(self, target: Any, *methods: str) -> None:
        for name in methods:
            setattr(self, name, _Remote(getattr(target, name)))


def agent_loop_batch(cfg: Any) -> DataProto:
    """Four trajectories through verl's real agent-loop post-processing, scored by verl's
    real reward loop worker (our process manager) as the agent loop calls it."""
    loop = get_event_loop()  # verl's workers take the thread's loop
    reward_worker = RewardLoopWorker(cfg)
    assert isinstance(reward_worker.reward_manager, ExpRLProcessRewardManager)
    worker = AgentLoopWorker(cfg, llm_client=None,
                             reward_loop_worker_handles=[_Handle(reward_worker, "compute_score")])  # fmt: skip
    tok = worker.tokenizer

    async def run() -> DataProto:
        inputs = []
        for response, group in zip(RESPONSES, GROUPS, strict=True):
            prompt = tok(f"Question {group}?", add_special_tokens=False)["input_ids"]
            ids = tok(response, add_special_tokens=False)["input_ids"]
            output = AgentLoopOutput(prompt_ids=prompt, response_ids=ids,
                                     response_mask=[1] * len(ids), num_turns=2,
                                     metrics=AgentLoopMetrics())  # fmt: skip
            extra = {"solution": "reference", "question": f"Question {group}?", "index": group}
            inputs.append(await worker._agent_loop_postprocess(
                output, validate=False, raw_prompt=[], extra_info=extra,
                reward_model={"ground_truth": "4"}, data_source="gsm8k",
            ))  # fmt: skip
        return worker._postprocess(inputs)

    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_process_rewards_on_the_agent_loop_path_equal_the_librarys_advantages(
    fault: FaultServer,
) -> None:
    """Before: the reward manager returned the list of steps as ``reward_score`` and
    ``_agent_loop_postprocess`` failed (``reward_score Input should be a valid number``)."""
    cfg = ppo_config(fault)
    chunk = agent_loop_batch(cfg)
    assert chunk.batch["rm_scores"].shape == (4, 32)
    steps = [json.loads(s) for s in chunk.non_tensor_batch["exprl_steps"]]
    assert [[v for _, v in s] for s in steps] == [s or [] for s in STEPS]

    # verl's own AgentLoopManager.generate_sequences, in our subclass, over a worker
    manager = object.__new__(ExpRLAgentLoopManager)
    manager.agent_loop_workers = [_Handle(_Worker(chunk), "generate_sequences")]
    prompts = DataProto.from_dict(non_tensors={"uid": np.array(["g0", "g0", "g1", "g1"])})
    data = asyncio.run(manager.generate_sequences(prompts))

    rm = data.batch["rm_scores"]
    for row, s in zip(rm.tolist(), steps, strict=True):  # each step's score at its end
        assert [i for i, v in enumerate(row) if v != 0] == [end for end, _ in s]
    data.batch["token_level_rewards"] = rm
    data.non_tensor_batch["uid"] = np.array(["g0", "g0", "g1", "g1"], dtype=object)
    advantages = compute_advantage(data, adv_estimator="exprl_delta").batch["advantages"]

    expected = process_advantages([s or [np.nan] for s in STEPS])
    length = data.batch["response_mask"].sum(dim=1).tolist()
    for b, row in enumerate(advantages.tolist()):
        if not expected.mask[b]:
            assert not any(row)  # unscored: no gradient
            continue
        start, ends = 0, [end for end, _ in steps[b]]
        for k, value in enumerate(expected.values.rows()[b].tolist()):
            stop = length[b] if k == len(ends) - 1 else ends[k] + 1
            assert row[start:stop] == pytest.approx([value] * (stop - start), abs=1e-6)
            start = stop
        assert not any(row[length[b] :])


class _Worker:
    def __init__(self, output: DataProto) -> None:
        self.output = output

    async def generate_sequences(self, chunk: DataProto) -> DataProto:
        return self.output


def test_the_agent_loop_path_without_our_manager_class_is_refused(fault: FaultServer) -> None:
    """Without it verl would keep one number per response and the estimator would see one
    step per rollout: a silent outcome reward. The reward manager refuses at start."""
    with pytest.raises(ConfigError, match="agent_loop_manager_class"):
        RewardLoopWorker(ppo_config(fault, manager=None))
