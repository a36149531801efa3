"""The TRL adapter on what TRL 1.16 really hands a reward function: message lists with
reasoning, tool calls (content absent) and tool results, parsed by TRL's own response
parser, and inside a real ``GRPOTrainer`` run with a tool and a second reward function.

Fast tests grade with the fault server's deterministic judge (the last ``[[score N]]``
mark anywhere in the prompt it is sent wins), so where a mark sits shows what the judge
was shown.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.adapters import TRLReward
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.guards import get_guards
from exprl_rewards.judges.local_model import VLLMServer, default_model_dir
from exprl_rewards.rewards.pipeline import RewardPipeline

from conftest import gsm8k_prompts


def tiny_grpo_config(tmp_path: Path) -> Any:
    """Two GRPO steps of 4 completions of 16 tokens on the CPU, one tool round."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
        max_completion_length=16, max_steps=2, learning_rate=1e-6, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
        max_tool_calling_iterations=1,
    )  # fmt: skip


@pytest.fixture
def pipeline(fault: FaultServer) -> RewardPipeline:
    return RewardPipeline(
        OpenAIJudge("marks", base_url=fault.url, max_attempts=1, timeout=5), mode="outcome"
    )


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """SmolLM2's tokenizer with a tool-aware ChatML template TRL knows how to parse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import AutoTokenizer
        from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    tok.chat_template = qwen2_5_chat_template
    return add_response_schema(tok)


def parsed(tokenizer: Any, text: str) -> dict[str, Any]:
    """An assistant message as TRL builds it from generated text."""
    return dict(tokenizer.parse_response(text + "<|im_end|>", prefix=""))


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_reasoning_tool_calls_and_results_are_all_graded(
    pipeline: RewardPipeline, tokenizer: Any
) -> None:
    tool = parsed(tokenizer, call("add", a=2, b=2))
    assert "content" not in tool  # TRL's tool-call message has no content at all
    completion = [
        tool,
        {"role": "tool", "name": "add", "content": "4 [[score 2]]"},
        {"role": "assistant", "reasoning_content": "the tool said 4 [[score 5]]", "content": "4"},
    ]
    reward = TRLReward(pipeline)
    # The mark in the reasoning is the last the judge saw: reasoning was rendered.
    assert reward(prompts=["2+2?"], completions=[completion], solution=["4"]) == [1.0]
    completion[-1] = {"role": "assistant", "content": [{"type": "text", "text": "It is 4."}]}
    # Content parts, and the tool result before them: its mark is the last one now.
    assert reward(prompts=["2+2?"], completions=[completion], solution=["4"]) == [0.25]


def test_a_completion_ending_in_a_tool_call_is_graded_or_unscored_never_a_crash(
    pipeline: RewardPipeline, tokenizer: Any, fault: FaultServer
) -> None:
    pending = [parsed(tokenizer, call("lookup", query="2+2 [[score 3]]"))]
    assert TRLReward(pipeline)(prompts=["2+2?"], completions=[pending], solution=["4"]) == [0.5]
    logged: dict[str, list[Any]] = {}
    before = fault.requests
    out = TRLReward(pipeline, tool_call_end="unscored")(
        prompts=["2+2?", "2+2?"],
        completions=[pending, [{"role": "assistant", "content": "4 [[score 5]]"}]],
        solution=["4", "4"],
        log_extra=lambda column, values: logged.setdefault(column, []).extend(values),
    )
    assert out == [None, 1.0]
    assert fault.requests == before + 1  # the pending call was never sent to the judge
    assert logged["exprl_reason"] == ["ends in a tool call with no answer after it", None]
    assert logged["exprl_raw"] == [None, 5.0]


def test_unscored_next_to_other_reward_functions(pipeline: RewardPipeline) -> None:
    prompts, solution = ["Q", "Q", "Q"], ["R", "R", "R"]
    completions = ["[[score 5]]", "[[score 3]]", "[[score none]]"]
    assert TRLReward(pipeline)(prompts, completions, solution=solution) == [1.0, 0.5, None]
    # TRL's nansum would make that None a 0 next to another reward: fill it instead.
    group = TRLReward(pipeline, unscored="group-mean")(prompts, completions, solution=solution)
    assert group == [1.0, 0.5, 0.75]  # the prompt's mean: zero advantage
    assert TRLReward(pipeline, unscored=0.0)(prompts, completions, solution=solution)[2] == 0.0


def test_grpo_trainer_with_a_tool_and_two_reward_functions(
    judge_server: VLLMServer, data_dir: Path, tmp_path: Path, tokenizer: Any
) -> None:
    """TRL 1.16's own GRPOTrainer: conversational prompts, a tool the policy may call,
    our reward next to a second one; every call gets message lists and returns a number
    or None per completion, and training steps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from datasets import Dataset
        from trl import GRPOTrainer

    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: the first integer.
            b: the second integer.
        """
        return a + b

    dataset = Dataset.from_list(gsm8k_prompts(data_dir, 2))
    judge = OpenAIJudge(
        judge_server.model, base_url=judge_server.url, top_logprobs=20, prefill=True, max_tokens=8,
        constrain_scores=True,
    )  # fmt: skip
    seen: list[list[Any]] = []

    class Recording(TRLReward):
        def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
            seen.append(list(kwargs["completions"]))
            out = super().__call__(*args, **kwargs)
            assert len(out) == len(kwargs["completions"])
            return out

    def brevity(completions: list[Any], **_: Any) -> list[float]:
        return [1.0 / (1 + len(json.dumps(c))) for c in completions]

    exprl = Recording(
        RewardPipeline(judge, mode="outcome", template="outcome-score-only"),
        unscored="group-mean",
    )
    config = tiny_grpo_config(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(
            model=str(default_model_dir()), reward_funcs=[exprl, brevity], args=config,
            train_dataset=dataset, processing_class=tokenizer, tools=[add],
        )  # fmt: skip
        trainer.train()
    assert trainer.state.global_step == 2
    assert len(seen) >= 2
    for completions in seen:
        assert all(isinstance(c, list) and c and c[0]["role"] == "assistant" for c in completions)
    logged = [h for h in trainer.state.log_history if "rewards/exprl/mean" in h]
    assert logged
    for entry in logged:  # filled by group mean: a number even next to another reward
        assert 0.0 <= entry["rewards/exprl/mean"] <= 1.0


def test_the_tested_trainer_releases_are_the_installed_ones() -> None:
    from importlib.metadata import version

    from exprl_rewards.adapters import TESTED

    assert {name: version(name) for name in TESTED} == TESTED


def test_a_judged_environment_grades_a_batch_of_episodes_in_one_judge_call(
    fault: FaultServer,
) -> None:
    """TRL awaits get_reward one environment after another: the first call grades all."""
    import asyncio

    from exprl_rewards.adapters.trl_env import JudgedEnvironment

    class Calc(JudgedEnvironment):
        pipeline = RewardPipeline(OpenAIJudge("marks", base_url=fault.url), mode="outcome")

        def add(self, a: int, b: int) -> int:
            """Add two integers.

            Args:
                a: the first integer.
                b: the second integer.
            """
            self._note(f"add({a}, {b}) = {a + b}")
            return a + b

    example = {"prompt": [{"role": "user", "content": "What is 2+2?"}], "solution": "2+2=4"}
    envs = [Calc() for _ in range(3)]
    for env in envs:
        env.reset(**example)
    envs[0].add(2, 2)
    envs[0].submit_answer("4 [[score 5]]")
    envs[1].submit_answer("5 [[score 2]]")  # envs[2] never answers
    before = fault.requests

    async def rewards() -> list[float | None]:  # as TRL's wrapper awaits them
        return [await e.get_reward() for e in envs]

    assert asyncio.run(rewards()) == [1.0, 0.25, None]  # an empty episode: unscored
    assert Calc._judged_batches == 1
    assert fault.requests - before == 2
    assert any("add(2, 2) = 4" in b["messages"][-1]["content"] for b in fault.bodies[-2:])


def test_grpo_trainer_with_a_judged_environment(
    judge_server: VLLMServer, data_dir: Path, tmp_path: Path, tokenizer: Any
) -> None:
    """TRL 1.16's own GRPOTrainer with environment_factory: the environment's get_reward
    is the reward (no reward_funcs); each batch's episodes are graded in one judge
    batch, and TRL logs the column under the class's name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from datasets import Dataset
        from trl import GRPOTrainer

    from exprl_rewards.adapters.trl_env import JudgedEnvironment

    judge = OpenAIJudge(judge_server.model, base_url=judge_server.url, top_logprobs=20,
                        prefill=True, max_tokens=8, constrain_scores=True)  # fmt: skip

    class MathEnv(JudgedEnvironment):
        pipeline = RewardPipeline(judge, mode="outcome", template="outcome-score-only",
                                  guards=get_guards("content-gate,neutraliser"))  # fmt: skip

    config = tiny_grpo_config(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(
            model=str(default_model_dir()), args=config, processing_class=tokenizer,
            train_dataset=Dataset.from_list(gsm8k_prompts(data_dir, 2)),
            environment_factory=MathEnv,
        )  # fmt: skip
        trainer.train()
    assert trainer.state.global_step == 2
    assert MathEnv._judged_batches >= 2  # one judge batch per reward computation
    logged = [h for h in trainer.state.log_history if "rewards/MathEnv/mean" in h]
    assert logged
    for entry in logged:  # content-free episodes get the minimum: a number, never made up
        mean = entry["rewards/MathEnv/mean"]
        assert mean is None or 0.0 <= mean <= 1.0


def _rank(rank: int, port: int, url: str, out: Any) -> None:
    """One of two TRL processes: its share of one group's completions, scored as TRL
    scores it, with torch.distributed (gloo) initialised as accelerate does."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    try:
        reward = TRLReward(RewardPipeline(OpenAIJudge("marks", base_url=url), mode="outcome"),
                           unscored="group-mean")  # fmt: skip
        share = [["4 [[score 5]]", "no idea [[score none]]"], ["7 [[score 2]]", "8 [[score 3]]"]]
        out.put((rank, reward(prompts=["Q", "Q"], completions=share[rank], solution=["S", "S"])))
    finally:
        dist.destroy_process_group()


def test_the_group_mean_fill_sees_the_whole_group_across_processes(fault: FaultServer) -> None:
    """TRL scores each process's share of a batch, and one prompt's completions can be
    split between processes: the unscored completion gets the mean of its group's four
    completions (0.583), not of its own process's share (1.0)."""
    import multiprocessing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    ranks = [context.Process(target=_rank, args=(r, port, fault.url, out)) for r in (0, 1)]
    for p in ranks:
        p.start()
    got = dict(out.get(timeout=120) for _ in ranks)
    for p in ranks:
        p.join(timeout=60)
    assert got[0] == [1.0, pytest.approx((1.0 + 0.25 + 0.5) / 3)]
    assert got[1] == [0.25, 0.5]
