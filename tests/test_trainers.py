"""The TRL adapter inside TRL's real GRPOTrainer, with the real local judge.

A few GRPO steps of SmolLM2-135M (the judge's own weights serve as a tiny policy) on
two GSM8K questions, rewarded by the vLLM-served judge through :class:`TRLReward`. TRL
is an optional dependency; this test needs it (``make test`` installs it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from exprl_rewards.adapters import TRLReward
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.local_model import VLLMServer, default_model_dir
from exprl_rewards.rewards.canaries import Canaries
from exprl_rewards.rewards.pipeline import RewardPipeline

from conftest import gsm8k_prompts


def test_grpo_trainer_steps_with_the_exprl_reward(
    judge_server: VLLMServer, data_dir: Path, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch/transformers import-time notices
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list(gsm8k_prompts(data_dir, 2))
    judge = OpenAIJudge(
        judge_server.model, base_url=judge_server.url, top_logprobs=20, prefill=True, max_tokens=8
    )
    calls: list[list[float | None]] = []

    class Counting(TRLReward):
        def __call__(self, *args: object, **kwargs: object) -> list[float | None]:
            out = super().__call__(*args, **kwargs)  # type: ignore[arg-type]
            calls.append(out)
            return out

    counting = Counting(RewardPipeline(judge, mode="outcome", template="outcome-score-only"),
                        canaries=Canaries(0.25))  # fmt: skip
    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=12,
        max_steps=2,
        learning_rate=1e-6,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(
            model=str(default_model_dir()),
            reward_funcs=[counting],
            args=config,
            train_dataset=dataset,
        )
        trainer.train()
    assert len(calls) >= 2
    assert all(len(c) == 4 for c in calls)
    assert all(v is None or 0.0 <= v <= 1.0 for c in calls for v in c)
    logged = [h for h in trainer.state.log_history if "rewards/exprl/mean" in h]
    assert logged, trainer.state.log_history
    for entry in logged:  # None: every completion of the step was unscored
        mean = entry["rewards/exprl/mean"]
        assert mean is None or 0.0 <= mean <= 1.0
        # the released trainer's batch metrics, through TRL's own log_metric
        assert 0.0 <= entry["exprl/unscored_frac"] <= 1.0
        assert 0.0 <= entry["exprl/groups_unscored"] <= 1.0
        assert entry["exprl/steps_per_response"] == 1.0  # outcome: one segment each
        if "exprl/groups_mixed" in entry:  # some group had a score
            shares = [entry[f"exprl/groups_{k}"] for k in ("all_zero", "all_one", "mixed")]
            assert sum(shares) == pytest.approx(1.0)
            assert 0.0 <= entry["exprl/last_step_mean"] <= 1.0
        # canaries and the hack alarm, through the same log_metric
        assert entry["exprl/hack/canary_share"] == pytest.approx(1 / 5)  # 1 beside 4
        if "exprl/hack/canary_reward" in entry:  # left out when no canary was scored
            assert 0.0 <= entry["exprl/hack/canary_reward"] <= 1.0
        assert entry["exprl/hack/alarm"] in (0.0, 1.0)
    assert counting.watch is not None
    assert counting.watch.alarm._history  # the alarm saw every step
    assert trainer.state.global_step == 2


def test_verl_reward_managers_with_the_adapter(data_dir: Path) -> None:
    """verl's own DataProto, NaiveRewardManager and BatchRewardManager call the adapter.

    verl is installed without its dependencies (its pins would replace this project's
    transformers); its DataProto and reward managers import and run as they would.
    """
    import functools
    import sys

    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from fault_server import FaultServer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        from transformers import AutoTokenizer
        from verl import DataProto
        from verl.workers.reward_manager import get_reward_manager_cls

    from exprl_rewards.adapters.verl import compute_score_batch, compute_score_sync

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    prompts = ["What is 2+2?", "What is 3+3?"]
    responses = ["4 [[score 5]]", "7 [[score 2]]", "6 [[score 4]]", "I give up [[score none]]"]
    prompt_width, response_width = 12, 16
    prompt_ids = torch.full((4, prompt_width), tokenizer.pad_token_id or 0)
    response_ids = torch.full((4, response_width), tokenizer.pad_token_id or 0)
    attention = torch.zeros((4, prompt_width + response_width), dtype=torch.long)
    lengths = []
    for i, response in enumerate(responses):
        p = tokenizer(prompts[i // 2], add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"]
        prompt_ids[i, prompt_width - len(p) :] = torch.tensor(p)  # left-padded, as verl does
        response_ids[i, : len(r)] = torch.tensor(r)
        attention[i, prompt_width - len(p) : prompt_width + len(r)] = 1
        lengths.append(len(r))
    data = DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": attention},
        non_tensors={
            "data_source": np.array(["gsm8k"] * 4, dtype=object),
            "reward_model": np.array([{"ground_truth": "4"}] * 4, dtype=object),
            "extra_info": np.array(
                [{"solution": "reference", "question": prompts[i // 2], "index": i // 2}
                 for i in range(4)], dtype=object,
            ),
        },
    )  # fmt: skip
    with FaultServer() as fault:
        kwargs = {"base_url": fault.url, "model": "marks", "mode": "outcome", "top_logprobs": None}
        batch_manager = get_reward_manager_cls("batch")(tokenizer, 0, compute_score_batch, **kwargs)
        out = batch_manager(data, return_dict=True)
        naive_manager = get_reward_manager_cls("naive")(
            tokenizer, 0, functools.partial(compute_score_sync, **kwargs)
        )
        naive = naive_manager(data, return_dict=True)
    tensor = out["reward_tensor"]
    assert tensor.shape == (4, response_width)
    expected = [1.0, 0.25, 0.75, 0.75]  # the unscored one gets its group's mean
    for i, n in enumerate(lengths):
        assert tensor[i, n - 1].item() == expected[i]
        assert torch.count_nonzero(tensor[i]).item() == 1
    extra = out["reward_extra_info"]
    assert extra["exprl_unscored"] == [0.0, 0.0, 0.0, 1.0]
    assert len(extra["score"]) == len(extra["exprl_raw"]) == 4
    # one sample at a time there is no group to borrow from: the neutral 0.5
    assert [naive["reward_tensor"][i, n - 1].item() for i, n in enumerate(lengths)] == [
        1.0, 0.25, 0.75, 0.5,
    ]  # fmt: skip
