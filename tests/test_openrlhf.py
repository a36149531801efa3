"""The reward server driven by OpenRLHF 0.11's own code: ``SingleTurnAgentExecutor``
posts each sample as OpenRLHF does (chat-templated query, no token), and
``SamplesGenerator._process_response_into_experience`` turns the answer into tensors.

A stand-in generation engine returns fixed tokens of the real SmolLM2 tokenizer; the
judge is the fault server's deterministic one, whose recorded request bodies show what
the judge was shown.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.local_model import default_model_dir
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.serve import RewardServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def server(fault: FaultServer) -> Iterator[RewardServer]:
    judge = OpenAIJudge("marks", base_url=fault.url, max_attempts=1, timeout=5)
    with RewardServer(RewardPipeline(judge, mode="outcome"), port=0) as running:
        yield running


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(str(default_model_dir()))


class Engine:
    """Stands in for OpenRLHF's vLLM engine: answers every prompt with fixed tokens."""

    def __init__(self, tokenizer: Any, answer: str) -> None:
        self.text = answer + "<|im_end|>"
        self.ids = tokenizer(self.text, add_special_tokens=False)["input_ids"]

    async def generate(self, prompt_token_ids: list[int], params: Any, **_: Any) -> Any:
        done = SimpleNamespace(token_ids=self.ids, text=self.text, finish_reason="stop",
                               logprobs=None)  # fmt: skip
        return SimpleNamespace(outputs=[done])


def rollout(
    server: RewardServer,
    tokenizer: Any,
    question: str,
    label: Any,
    answer: str,
    max_len: int = 4096,
) -> tuple[dict[str, Any], Any]:
    """One sample through OpenRLHF's executor and its experience builder."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    executor = SingleTurnAgentExecutor(remote_rm_url=server.url + "/get_reward")
    params = SimpleNamespace(max_tokens=32, logprobs=None)
    output = asyncio.run(
        executor.execute(prompt, label, params, max_len, tokenizer, Engine(tokenizer, answer))
    )
    experience = SamplesGenerator._process_response_into_experience(None, output, max_len=max_len)  # type: ignore[arg-type]
    return output, experience


def judged(fault: FaultServer) -> str:
    """The user message of the judge's last request."""
    return str(fault.bodies[-1]["messages"][-1]["content"])


def test_a_scored_sample_with_a_clean_question_and_response(
    server: RewardServer, tokenizer: Any, fault: FaultServer
) -> None:
    output, experience = rollout(server, tokenizer, "What is 2+2?", "2 + 2 = 4", "4 [[score 4]]")
    assert output["reward"] == [0.75]
    assert experience.info["reward"].flatten().tolist() == [0.75]
    assert experience.info["exprl_unscored"].flatten().tolist() == [0.0]
    seen = judged(fault)
    assert "\nWhat is 2+2?\n" in seen
    assert "\n4 [[score 4]]\n" in seen  # the response, its end-of-turn token gone
    assert "<|im_start|>" not in seen
    assert "<|im_end|>" not in seen


def test_an_unscored_sample_is_a_number_and_a_flag_not_a_crash(
    server: RewardServer, tokenizer: Any
) -> None:
    output, experience = rollout(server, tokenizer, "What is 2+2?", "4", "no idea [[score none]]")
    assert output["reward"] == [0.5]  # neutral: one sample per request, so no group mean
    assert experience.info["exprl_unscored"].flatten().tolist() == [1.0]
    assert all(not v.isnan().any() for v in experience.info.values())


@pytest.mark.parametrize(
    ("label", "question", "reference"),
    [
        (
            {"solution": "2 + 2 = 4", "question": "Add two and two."},
            "Add two and two.",
            "2 + 2 = 4",
        ),
        (json.dumps({"solution": "2 + 2 = 4"}), "What is 2+2?", "2 + 2 = 4"),
        (4, "What is 2+2?", "4"),
        ("{x} = 4", "What is 2+2?", "{x} = 4"),
    ],
)
def test_labels_as_objects_json_numbers_and_text(
    server: RewardServer, tokenizer: Any, fault: FaultServer, label: Any, question: str,
    reference: str,
) -> None:  # fmt: skip
    output, _ = rollout(server, tokenizer, "What is 2+2?", label, "4 [[score 5]]")
    assert output["reward"] == [1.0]
    seen = judged(fault)
    assert f"\n{question}\n" in seen
    assert f"\n{reference}\n" in seen


def test_an_empty_reference_is_unscored_without_a_judge_call(
    server: RewardServer, tokenizer: Any, fault: FaultServer
) -> None:
    before = fault.requests
    output, experience = rollout(server, tokenizer, "What is 2+2?", "  ", "4 [[score 5]]")
    assert fault.requests == before
    assert output["reward"] == [0.5]
    assert experience.info["exprl_unscored"].flatten().tolist() == [1.0]


def test_a_left_truncated_prompt_falls_back_to_the_whole_query(
    server: RewardServer, tokenizer: Any, fault: FaultServer
) -> None:
    question = "Long preamble. " * 30 + "What is 2+2?"
    output, experience = rollout(server, tokenizer, question, "4", "4 [[score 4]]", max_len=60)
    assert len(output["observation_tokens"]) <= 60  # OpenRLHF cut the prompt from the left
    assert output["reward"] == [0.75]
    assert experience.info["exprl_prompt_matched"].flatten().tolist() == [0.0]
    assert "<|im_start|>" not in judged(fault)


REWARD_FILE = "from exprl_rewards.adapters.openrlhf_func import reward_func  # noqa: F401\n"


def in_process(
    tmp_path: Any, tokenizer: Any, answers: list[str], label: Any = "2 + 2 = 4"
) -> list[tuple[dict[str, Any], Any]]:
    """Samples through OpenRLHF's executor with ``--reward.remote_url`` a reward file,
    all at once, as OpenRLHF's rollout runs them."""
    reward_file = tmp_path / "exprl_openrlhf_reward.py"
    reward_file.write_text(REWARD_FILE)
    executor = SingleTurnAgentExecutor(remote_rm_url=str(reward_file))
    assert executor.reward_func is not None  # OpenRLHF loaded our function
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, tokenize=False
    )
    params = SimpleNamespace(max_tokens=32, logprobs=None)

    async def run() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(
            executor.execute(prompt, label, params, 4096, tokenizer, Engine(tokenizer, a))
            for a in answers
        )))  # fmt: skip

    outputs = asyncio.run(run())
    return [(o, SamplesGenerator._process_response_into_experience(None, o, max_len=4096))  # type: ignore[arg-type]
            for o in outputs]  # fmt: skip


def test_the_in_process_reward_func_micro_batches_concurrent_samples(
    tmp_path: Any, tokenizer: Any, fault: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--reward.remote_url exprl_openrlhf_reward.py: OpenRLHF calls reward_func once per
    sample in threads; the samples meet in one judge batch and get the server's numbers."""
    from exprl_rewards.adapters.environ import environment_reward

    monkeypatch.setenv("EXPRL_JUDGE_BASE_URL", fault.url)
    monkeypatch.setenv("EXPRL_JUDGE_MODEL", "marks")
    monkeypatch.setenv("EXPRL_JUDGE_MODE", "outcome")
    monkeypatch.setenv("EXPRL_GUARDS", "content-gate")
    monkeypatch.setenv("EXPRL_JUDGE_TOP_LOGPROBS", "0")  # the written digit: exact numbers
    answers = ["4 [[score 5]]", "5 [[score 2]]", "no idea [[score none]]", "Solution:"]
    got = in_process(tmp_path, tokenizer, answers)
    assert [o["reward"] for o, _ in got] == [[1.0], [0.25], [0.5], [0.0]]
    assert [e.info["exprl_unscored"].item() for _, e in got] == [0.0, 0.0, 1.0, 0.0]
    assert [e.info["exprl_guard_content_gate"].item() for _, e in got] == [0.0, 0.0, 0.0, 1.0]
    reward = environment_reward()
    assert reward.flushes == 1  # three judged samples from three threads, one batch


def test_the_in_process_reward_func_never_makes_up_a_reward_for_a_dead_judge(
    tmp_path: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EXPRL_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens
    monkeypatch.setenv("EXPRL_JUDGE_MODEL", "dead")
    monkeypatch.setenv("EXPRL_JUDGE_MODE", "outcome")
    ((output, experience),) = in_process(tmp_path, tokenizer, ["4"])
    assert output["reward"] is None  # OpenRLHF keeps it unrewarded; no fake number
    assert "reward" not in experience.info
    assert "the judge never answered" in caplog.text


def test_a_multi_turn_agent_is_graded_once_on_its_whole_episode(
    tokenizer: Any, fault: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--train.agent_func_path: OpenRLHF's MultiTurnAgentExecutor drives our agent
    instance for two turns; the judge grades the whole episode once, at the end."""
    from openrlhf.utils.agent import MultiTurnAgentExecutor

    from exprl_rewards.adapters.openrlhf_agent import JudgedAgentInstance

    monkeypatch.setenv("EXPRL_JUDGE_BASE_URL", fault.url)
    monkeypatch.setenv("EXPRL_JUDGE_MODEL", "marks")
    monkeypatch.setenv("EXPRL_JUDGE_TOP_LOGPROBS", "0")

    class TwoTurns(JudgedAgentInstance):
        async def environment(self, action: str, states: dict[str, Any]) -> tuple[str, bool]:
            if self.turns == 1:
                return "\nTool: 2 + 2 = 4 [[score 2]]\n", False
            return "", True

    class AgentExecutor(MultiTurnAgentExecutor):  # what an agent file defines
        def __init__(self) -> None:
            super().__init__(TwoTurns)

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, tokenize=False
    )
    engine = Engine(tokenizer, "it is 4 [[score 4]]")
    params = SimpleNamespace(max_tokens=None, logprobs=None)
    before = fault.requests
    output = asyncio.run(
        AgentExecutor().execute(prompt, "2 + 2 = 4", params, 4096, tokenizer, engine)
    )
    assert fault.requests - before == 1  # one verdict, for the whole episode
    seen = judged(fault)
    assert "Tool: 2 + 2 = 4" in seen  # the environment's feedback is graded too
    assert output["reward"] == 0.75  # the last mark: the second action's [[score 4]]
    assert len(output["action_ranges"]) == 2
    experience = SamplesGenerator._process_response_into_experience(None, output, max_len=4096)  # type: ignore[arg-type]
    assert experience.info["exprl_unscored"].flatten().tolist() == [0.0]
