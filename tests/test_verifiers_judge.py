"""The verifiers judge plugin through verifiers 0.4's own code: ``TaskConfig`` resolves
the plugged judge by its id (``exprl-judge``, imported as a top-level package), and
``Task.score`` runs it after the task's own rewards, one trace per call, concurrently.
The judge is the fault server's deterministic one over real HTTP.

verifiers 0.4 needs ``openai<3``, so this runs in its own environment
(``.venv-verifiers``, built by ``make test``); the main environment skips it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fault_server import FaultServer

vf = pytest.importorskip(
    "verifiers.v1", reason="verifiers needs openai<3: make test runs it in .venv-verifiers"
)


class MathData(vf.TaskData):  # type: ignore[misc,name-defined]
    answer: str


class MathTask(vf.Task[MathData, vf.State, vf.TaskConfig]):  # type: ignore[misc,name-defined]
    @vf.reward
    async def tried(self, trace: Any) -> float:  # a task reward beside the judge
        return float(bool(trace.last_reply))


@pytest.fixture(scope="module")
def judge() -> Iterator[FaultServer]:
    with FaultServer(models=("marks",)) as server:
        yield server


def task(judge: FaultServer, **options: Any) -> Any:
    config = vf.TaskConfig.model_validate({"judges": [
        {"id": "exprl-judge", "base_url": judge.url, "model": "marks", "top_logprobs": 0,
         "name": "exprl", **options},
    ]})  # fmt: skip
    return MathTask(MathData(prompt="What is 2+2?", answer="2 + 2 = 4"), config)


def trace(t: Any, reply: str) -> Any:
    return vf.Trace(task=vf.TraceTask(type="MathTask", data=t.data),
                    agent=vf.AgentInfo(config=vf.AgentConfig()), root_reply=reply)  # fmt: skip


def test_the_plugin_is_resolved_by_id_and_scores_through_task_score(judge: FaultServer) -> None:
    from exprl_rewards.adapters.verifiers_judge import ExpRLJudge, ExpRLJudgeConfig

    t = task(judge)
    assert isinstance(t.config.judges[0], ExpRLJudgeConfig)
    assert isinstance(t.plugged_judges()[0], ExpRLJudge)
    replies = ["4 [[score 5]]", "5 [[score 2]]", "Thought process:", "4 [[score 4]]"]
    traces = [trace(t, r) for r in replies]
    before = judge.requests

    async def score_all() -> None:
        await asyncio.gather(*(t.score(tr) for tr in traces))

    asyncio.run(score_all())
    assert [tr.rewards["exprl"].score for tr in traces] == [1.0, 0.25, 0.0, 0.75]
    assert all(tr.rewards["tried"].score == 1.0 for tr in traces)
    assert judge.requests - before == 3  # the master key is gated: no judge call
    prompt = judge.bodies[-1]["messages"][-1]["content"]
    assert "What is 2+2?" in prompt
    assert "2 + 2 = 4" in prompt


def test_an_unscored_trace_raises_instead_of_scoring_the_model_zero(judge: FaultServer) -> None:
    t = task(judge)
    tr = trace(t, "no idea [[score none]]")
    with pytest.raises(Exception, match="gave no score"):
        asyncio.run(t.score(tr))


def test_a_missing_reference_field_is_an_error_that_names_it(judge: FaultServer) -> None:
    t = task(judge, reference_field="solution")
    with pytest.raises(Exception, match="reference_field"):
        asyncio.run(t.score(trace(t, "4 [[score 5]]")))
