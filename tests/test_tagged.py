"""process-tagged: every step of a rollout scored in one request, one digit per step.

The prompt marks the steps and no step can forge a marker; the answer's digits become
the steps' scores in order, each read with its own logprobs; an answer with the wrong
number of scores leaves the rollout unscored; the cache key knows the request is a list;
and the mode runs through the pipeline with the real embedded judge, constrained to one
digit per step.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exprl_rewards import Rollout
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.base import JudgeRequest
from exprl_rewards.judges.local_model import VLLMServer
from exprl_rewards.judges.verdict import RawOutput, TokenLogprobs, finish
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.rewards.tagged import expand, mark_steps

Q, REF = "What is 6 * 7 + 1?", "6 * 7 = 42, and 42 + 1 = 43. The answer is 43."
RESPONSE = "6 * 7 = 42.\nThen 42 + 1 = 43.\nThe answer is 43."


def real_judge(server: VLLMServer) -> OpenAIJudge:
    """The embedded judge behind vLLM, its digits constrained, its answer prefilled."""
    return OpenAIJudge(server.model, base_url=server.url, top_logprobs=20, prefill=True,
                       constrain_scores=True)  # fmt: skip


def right_and_wrong(reference: str) -> list[Rollout]:
    """A right rollout and a wrong one of three steps each, one group."""
    wrong = "6 * 7 = 48.\nThen 48 + 1 = 49.\nThe answer is 49."
    return [Rollout(id="a", group_id="g", question=Q, reference=reference, response=RESPONSE),
            Rollout(id="b", group_id="g", question=Q, reference=reference, response=wrong)]  # fmt: skip


def tagged() -> RewardPipeline:
    judge = OpenAIJudge("m", base_url="http://127.0.0.1:9/v1")
    return RewardPipeline(judge, mode="process-tagged", slicer="newline")


def request() -> JudgeRequest:
    pipeline = tagged()
    rollout = Rollout(id="r", group_id="g", question=Q, reference=REF, response=RESPONSE)
    (only,) = pipeline.requests(rollout, pipeline.segments(rollout))
    return only


def raw(text: str, tops: list[dict[str, float]] | None = None) -> RawOutput:
    tokens = None
    if tops is not None:
        tokens = tuple(TokenLogprobs(ch, math.log(top.get(ch, 1e-9)),
                                     tuple((t, math.log(p)) for t, p in top.items()))
                       for ch, top in zip(text, tops, strict=True))  # fmt: skip
    return RawOutput(text=text, finish_reason="stop", tokens=tokens)


def test_one_request_marks_every_step_and_asks_for_one_digit_each() -> None:
    only = request()
    assert only.key == "r#all"
    assert (only.scores, only.pattern, only.choices) == (3, "[1-5]{3}", ())
    assert only.prefill == "Scores: "
    user = only.messages[-1]["content"]
    assert "[STEP 1]\n6 * 7 = 42.\n[STEP 2]\nThen 42 + 1 = 43.\n[STEP 3]\nThe answer is 43." in user
    assert user.endswith("Your 3 scores, one digit per step:")
    assert "## The student's reasoning, 3 steps" in user


@given(st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_no_step_text_forges_a_marker(steps: list[str]) -> None:
    marked = mark_steps(steps)
    assert marked.count("[STEP") == len(steps)
    assert [line for line in marked.split("\n") if line.startswith("[STEP")][-1] == (
        f"[STEP {len(steps)}]"
    )


def test_each_digit_is_a_step_score_with_its_own_logprobs() -> None:
    only = request()
    tops = [{"4": 0.5, "5": 0.5}, {"2": 1.0}, {"5": 0.9, "1": 0.05}]
    judgement = finish(only, raw("425", tops), backend="t", model="m")
    assert [p.parsed for p in judgement.parts] == [4.0, 2.0, 5.0]
    assert [round(p.score or 0, 3) for p in judgement.parts] == [4.5, 2.0, round(4.55 / 0.95, 3)]
    assert judgement.score == judgement.parts[-1].score
    assert [p.key for p in judgement.parts] == ["r#all/0", "r#all/1", "r#all/2"]
    steps = expand([judgement], [only])
    assert [s.score for s in steps] == [p.score for p in judgement.parts]


@pytest.mark.parametrize(
    ("text", "why"),
    [("42", "expected 3 scores"), ("4256", "expected 3 scores"), ("4 2 x", "got 2 digits"),
     ("406", "outside the 1-5 scale"), ("", "expected 3 scores")],
)  # fmt: skip
def test_an_answer_without_one_score_per_step_leaves_every_step_unscored(
    text: str, why: str
) -> None:
    only = request()
    judgement = finish(only, raw(text), backend="t", model="m")
    assert judgement.score is None
    assert why in (judgement.reason or "")
    steps = expand([judgement], [only])
    assert len(steps) == 3
    assert all(s.score is None and s.reason == judgement.reason for s in steps)


def test_the_cache_key_of_a_list_request_is_its_own() -> None:
    import dataclasses

    only = request()
    single = dataclasses.replace(only, scores=0, pattern="")
    assert only.cache_key("b", "m", {}) != single.cache_key("b", "m", {})


def test_tagged_scores_through_the_pipeline_with_the_real_judge(
    judge_server: VLLMServer,
) -> None:
    """The embedded judge, constrained to one digit per step: one request a rollout,
    every step scored from the judge's own digits, and the rollout's score its last."""
    pipeline = RewardPipeline(real_judge(judge_server), mode="process-tagged", slicer="newline")
    batch = pipeline.score_sync(right_and_wrong(REF))
    assert batch.summary()["judge_requests"] == 2
    for result in batch.results:
        assert len(result.segments) == 3
        assert all(s.raw is not None and 1 <= s.raw <= 5 for s in result.segments)
        assert result.score == result.segments[-1].score
        digits = result.judgements[0].text.removeprefix("Scores: ")
        assert len(digits) == 3
        assert digits.isdigit()


@pytest.mark.parametrize("mode", ["process-tagged", "process-growing"])
def test_the_score_guards_work_on_the_new_modes(judge_server: VLLMServer, mode: str) -> None:
    """A second look asks every rollout again in the other prompt order (its requests
    counted apart), and the verifier cap holds a wrong final answer's last step down."""
    from exprl_rewards.judges.guards import get_guards

    guards = get_guards("second-look:1.0,verifier-cap:0.25")
    pipeline = RewardPipeline(real_judge(judge_server), mode=mode, slicer="newline",  # type: ignore[arg-type]
                              guards=guards)  # fmt: skip
    batch = pipeline.score_sync(right_and_wrong("6 * 7 = 42, and 42 + 1 = 43.\n#### 43"))
    per_look = 2 if mode == "process-tagged" else 6
    assert batch.summary()["judge_requests"] == 2 * per_look
    wrong = batch.results[1]
    if wrong.score is not None:  # the looks agreed: the cap decides the last step
        assert wrong.segments[-1].score is not None
        assert wrong.segments[-1].score <= 0.25
        assert any(h.guard == "verifier-cap" for h in wrong.guards)
