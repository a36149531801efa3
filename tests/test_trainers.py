"""The TRL adapter inside TRL's real GRPOTrainer, with the real local judge.

A few GRPO steps of SmolLM2-135M (the judge's own weights serve as a tiny policy) on
two GSM8K questions, rewarded by the vLLM-served judge through :class:`TRLReward`. TRL
is an optional dependency; this test needs it (``make test`` installs it).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from exprl_rewards.adapters import TRLReward
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.local_model import VLLMServer, default_model_dir
from exprl_rewards.pipeline import RewardPipeline


def test_grpo_trainer_steps_with_the_exprl_reward(
    judge_server: VLLMServer, data_dir: Path, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch/transformers import-time notices
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

    rows = [
        json.loads(line)
        for line in (data_dir / "references" / "gsm8k_test.jsonl").read_text().splitlines()[:2]
    ]
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["question"]}], "solution": r["answer"]}
         for r in rows]
    )  # fmt: skip
    judge = OpenAIJudge(
        judge_server.model, base_url=judge_server.url, top_logprobs=20, prefill=True, max_tokens=8
    )
    calls: list[list[float | None]] = []

    class Counting(TRLReward):
        def __call__(self, *args: object, **kwargs: object) -> list[float | None]:
            out = super().__call__(*args, **kwargs)  # type: ignore[arg-type]
            calls.append(out)
            return out

    counting = Counting(RewardPipeline(judge, mode="outcome", template="outcome-score-only"))
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
    for entry in logged:
        assert 0.0 <= entry["rewards/exprl/mean"] <= 1.0
    assert trainer.state.global_step == 2
