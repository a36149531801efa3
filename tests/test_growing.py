"""process-growing: one conversation per rollout that only grows.

Golden renders of the conversation; every request a prefix of the next as the judge
receives it; the cache keyed on the judge's earlier answers; an unscored step ends its
conversation; and the mode through the pipeline with the fault server's deterministic
judge and with the real embedded judge.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards import Rollout
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.base import Judgement
from exprl_rewards.judges.local_model import VLLMServer
from exprl_rewards.rewards.growing import UNJUDGED, conversation
from exprl_rewards.rewards.pipeline import RewardPipeline

Q, REF = "What is 6 * 7 + 1?", "6 * 7 = 42, and 42 + 1 = 43. The answer is 43."
RESPONSE = "6 * 7 = 42.\n\nThen 42 + 1 = 43.\n\nThe answer is 43."

GOLDEN_TURN_2 = """## Step 2 of 3
[BEGIN STEP {tag}]
Then 42 + 1 = 43.


[END STEP {tag}]"""


def chain(pipeline: RewardPipeline, response: str = RESPONSE) -> list[Any]:
    rollout = Rollout(id="r", group_id="g", question=Q, reference=REF, response=response)
    return pipeline.requests(rollout, pipeline.segments(rollout))


def said(score: int) -> Judgement:
    return Judgement(float(score), None, text=f"Score: {score}")


@pytest.fixture
def growing() -> RewardPipeline:
    judge = OpenAIJudge("marks", base_url="http://127.0.0.1:9/v1")
    return RewardPipeline(judge, mode="process-growing", slicer="blank-line")


def test_the_conversation_grows_by_the_judges_answer_and_one_step(
    growing: RewardPipeline,
) -> None:
    requests = chain(growing)
    assert len(requests) == 3
    first = conversation(requests, [], 0)
    system, user = first.messages
    assert system["role"] == "system"
    assert "one step at a time" in system["content"]
    assert user["content"].endswith("Your score for the progress so far, one digit from 1 to 5:")
    assert "6 * 7 = 42." in user["content"]
    assert "Then 42" not in user["content"]
    third = conversation(requests, [said(3), said(4)], 2)
    roles = [m["role"] for m in third.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third.messages[:2] == first.messages  # request 1 is where request 3 starts
    assert [m["content"] for m in third.messages[2::2]] == ["Score: 3", "Score: 4"]
    tag = user["content"].split("[BEGIN STEP ")[1][:8]
    assert third.messages[3]["content"] == GOLDEN_TURN_2.format(tag=tag)
    assert third.prefill == "Score: "
    assert third.choices == ("1", "2", "3", "4", "5")
    assert [r.key for r in requests] == ["r#0", "r#1", "r#2"]


def test_a_changed_earlier_score_changes_every_later_cache_key(growing: RewardPipeline) -> None:
    requests = chain(growing)
    sampling: dict[str, Any] = {"temperature": 0.0}

    def key(answers: list[Judgement], k: int) -> str:
        return conversation(requests, answers, k).cache_key("openai", "m", sampling)

    assert key([said(3), said(4)], 2) == key([said(3), said(4)], 2)
    assert key([said(3), said(4)], 2) != key([said(2), said(4)], 2)
    assert key([said(3)], 1) != key([said(5)], 1)
    assert key([], 0) == key([said(1)], 0)  # request 1 depends on no answer


def test_a_step_without_a_score_ends_its_conversation(fault: FaultServer) -> None:
    """Step 2's answer has no score: step 3 is never asked; the rollout is unscored.
    The other rollout's three steps are judged, round by round."""
    judge = OpenAIJudge("marks", base_url=fault.url, max_attempts=1, top_logprobs=None)
    pipeline = RewardPipeline(judge, mode="process-growing", slicer="blank-line")
    rollouts = [
        Rollout(id="a", group_id="g", question=Q, reference=REF,
                response="x [[score 4]]\n\ny [[score none]]\n\nz [[score 5]]"),
        Rollout(id="b", group_id="g", question=Q, reference=REF,
                response="x [[score 2]]\n\ny [[score 3]]\n\nz [[score 5]]"),
    ]  # fmt: skip
    before = len(fault.bodies)
    a, b = pipeline.score_sync(rollouts).results
    assert len(fault.bodies) - before == 5
    assert a.score is None
    assert [s.reason for s in a.segments][2] == UNJUDGED
    assert [s.raw for s in b.segments] == [2.0, 3.0, 5.0]
    assert b.score == 1.0  # the last step's: progress of the whole rollout
    last = fault.bodies[-1]["messages"]  # b's third request: the whole conversation
    answers = [m["content"] for m in last if m["role"] == "assistant"]
    assert answers == ["Reasoning: as marked.\nScore: 2", "Reasoning: as marked.\nScore: 3"]


def test_the_judge_receives_each_request_as_a_prefix_of_the_next(
    judge_server: VLLMServer,
) -> None:
    """With the real embedded judge behind vLLM's chat template, the tokens of request k
    start with those of request k - 1, as prefix caching needs (checked on the rendered
    prompts the server tokenises)."""
    from transformers import AutoTokenizer

    from exprl_rewards.judges.local_model import default_model_dir

    judge = OpenAIJudge(judge_server.model, base_url=judge_server.url, top_logprobs=20,
                        prefill=True, constrain_scores=True)  # fmt: skip
    pipeline = RewardPipeline(judge, mode="process-growing", slicer="blank-line")
    rollout = Rollout(id="r", group_id="g", question=Q, reference=REF, response=RESPONSE)
    (result,) = pipeline.score_sync([rollout]).results
    assert all(s.raw is not None for s in result.segments)  # the judge's own digits
    texts = [j.text for j in result.judgements]
    assert all(t.startswith("Score: ") for t in texts)
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
    requests = chain(pipeline)
    prompts = []
    for k in range(len(requests)):
        messages = list(conversation(requests, result.judgements, k).messages)
        messages.append({"role": "assistant", "content": "Score: "})
        prompts.append(tokenizer.apply_chat_template(
            messages, tokenize=True, continue_final_message=True))  # fmt: skip
    ids = [list(p["input_ids"] if isinstance(p, dict) else p) for p in prompts]
    for earlier, later in itertools.pairwise(ids):
        assert later[: len(earlier)] == earlier


def test_a_batch_judge_gets_one_round_per_step() -> None:
    """An in-process engine (``batches = True``) is asked a round at a time: every live
    conversation's next request in one batch; a conversation whose step had no score
    drops out of later rounds."""
    import asyncio

    from exprl_rewards.judges.base import JudgeRequest
    from exprl_rewards.rewards.growing import judge_in_turns

    class Rounds:
        batches = True

        def __init__(self) -> None:
            self.sizes: list[int] = []

        async def judge(self, requests: Any) -> list[Judgement]:
            self.sizes.append(len(requests))
            return [Judgement(None if "none" in r.key else 4.0, None, text="4", key=r.key)
                    for r in requests]  # fmt: skip

    def chain(name: str, n: int) -> list[JudgeRequest]:
        message = {"role": "user", "content": name}
        return [JudgeRequest(messages=(message,), key=f"{name}#{k}") for k in range(n)]  # type: ignore[arg-type]

    judge = Rounds()
    out = asyncio.run(judge_in_turns(judge, [chain("a", 3), chain("b", 1), chain("none", 3)]))
    assert judge.sizes == [3, 1, 1]
    assert [j.key for j in out] == ["a#0", "a#1", "a#2", "b#0", "none#0", "none#1", "none#2"]
    assert [j.reason for j in out[-2:]] == [UNJUDGED, UNJUDGED]
