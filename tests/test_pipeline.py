"""The reward pipeline's bookkeeping, with a deterministic judge over real HTTP.

The fault server answers "Score: N" for the last ``[[score N]]`` mark in the prompt, so
each step's raw score is known in advance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from fault_server import FaultServer

from exprl_rewards import ConfigError, InputError, Rollout, process_advantages
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.rewards.pipeline import RewardPipeline


@pytest.fixture(scope="module")
def judge() -> Iterator[OpenAIJudge]:
    with FaultServer() as server:
        yield OpenAIJudge("marks", base_url=server.url, max_attempts=2, backoff=0.01, timeout=5)


def rollout(rid: str, group: str, marks: list[str], **kw: object) -> Rollout:
    response = "\n".join(f"step {i} [[score {m}]]" for i, m in enumerate(marks))
    return Rollout(id=rid, group_id=group, question="Q?", reference="R.", response=response, **kw)  # type: ignore[arg-type]


def test_process_segment_scores_calibration_and_deltanorm(judge: OpenAIJudge) -> None:
    batch = [
        rollout("a", "g", ["1", "3", "5"]),
        rollout("b", "g", ["5", "5"]),
        rollout("c", "g", ["2", "none", "4"]),
    ]
    result = RewardPipeline(judge, mode="process-segment", slicer="newline").score_sync(batch)
    a, b, c = result.results
    assert [s.raw for s in a.segments] == [1.0, 3.0, 5.0]
    assert [s.score for s in a.segments] == [0.0, 0.5, 1.0]  # (N - 1) / 4
    expected = process_advantages([[0.0, 0.5, 1.0], [1.0, 1.0]], "delta").values.rows()
    assert [s.advantage for s in a.segments] == pytest.approx(expected[0].tolist())
    assert [s.advantage for s in b.segments] == pytest.approx(expected[1].tolist())
    assert a.score == pytest.approx(0.5)
    assert b.score == 1.0
    # One unparseable step masks the rollout but keeps the others' scores visible.
    assert c.score is None
    assert c.reason == "segment 1: parse: no score line"
    assert [s.score for s in c.segments] == [0.25, None, 0.75]
    assert all(s.advantage is None for s in c.segments)
    summary = result.summary()
    assert summary["rollouts"] == 3
    assert summary["scored"] == 2
    assert summary["unscored_reasons"] == {"segment 1: parse: no score line": 1}
    assert summary["judge_requests"] == 8


def test_prefix_mode_sees_growing_prefixes_and_reduces_to_the_last(judge: OpenAIJudge) -> None:
    batch = [rollout("a", "g", ["2", "3", "4"])]
    pipeline = RewardPipeline(
        judge, mode="process-prefix", slicer="newline", process_estimator="rtg"
    )
    (a,) = pipeline.score_sync(batch).results
    assert [s.raw for s in a.segments] == [2.0, 3.0, 4.0]
    assert a.score == 0.75  # the last prefix is the whole rollout
    assert [s.advantage for s in a.segments] == pytest.approx([0.75, 0.5, 0.25])  # s_K - s_{k-1}
    requests = pipeline.requests(batch[0], pipeline.segments(batch[0]))
    users = [r.messages[-1]["content"] for r in requests]
    assert "step 0 [[" in users[2]
    assert "step 2 [[" in users[2]
    assert "step 2 [[" not in users[1]


def test_outcome_mode_group_advantages_and_token_broadcast(judge: OpenAIJudge) -> None:
    offsets = ((0, 4), (4, 10), (10, 18))
    batch = [
        rollout("a", "g1", ["5"], token_offsets=offsets),
        rollout("b", "g1", ["1"]),
        rollout("c", "g1", ["none"]),
        rollout("d", "g2", ["3"]),
    ]
    results = RewardPipeline(judge, mode="outcome", template="outcome").score_sync(batch).results
    assert [r.score for r in results] == [1.0, 0.0, None, 0.5]
    assert results[2].reason == "parse: no score line"
    a_adv = 0.5 / (math.sqrt(0.5) + 1e-6)  # GRPO over the two scored rollouts of g1
    assert results[0].advantage == pytest.approx(a_adv)
    assert results[1].advantage == pytest.approx(-a_adv)
    assert results[2].advantage is None
    assert results[3].advantage == 0.0
    assert results[0].token_advantages is not None
    assert results[0].token_advantages.tolist() == pytest.approx([a_adv] * 3)


def test_truncated_empty_and_duplicate_rollouts(judge: OpenAIJudge) -> None:
    batch = [
        rollout("cut", "g", ["5", "5"], truncated=True),
        rollout("ok", "g", ["3", "3"]),
        Rollout(id="empty", group_id="g", question="Q", reference="R", response=""),
    ]
    released = RewardPipeline(judge, slicer="newline").score_sync(batch).results
    assert released[0].score == 0.0
    assert not released[0].judgements
    assert released[2].score is None
    assert released[2].reason == "empty response"
    judged = RewardPipeline(judge, slicer="newline", truncated="judge").score_sync(batch).results
    assert judged[0].score == 1.0
    skipped = (
        RewardPipeline(judge, slicer="newline", truncated="unscored").score_sync(batch).results
    )
    assert skipped[0].reason == "segment 0: truncated"
    with pytest.raises(InputError, match="'ok' appears more than once"):
        RewardPipeline(judge).score_sync([batch[1], batch[1]])


def test_configuration_errors(judge: OpenAIJudge) -> None:
    with pytest.raises(ConfigError, match="is for 'outcome', not mode 'process-prefix'"):
        RewardPipeline(judge, mode="process-prefix", template="outcome")
    with pytest.raises(ConfigError, match="reduce must be"):
        RewardPipeline(judge, reduce="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="truncated must be"):
        RewardPipeline(judge, truncated="drop")  # type: ignore[arg-type]


def test_default_settings_are_the_released_ones(judge: OpenAIJudge) -> None:
    p = RewardPipeline(judge)
    assert (p.mode, p.template.name, p.process_estimator, p.truncated) == (
        "process-segment",
        "process-segment",
        "delta",
        "zero",
    )
    assert p.slicer.split("a ### b") == p.slicer.split("a ### b")  # the exprl preset
    assert [s.text for s in p.slicer.split("a ### b")] == ["a ###", " b"]
    assert np.isclose(p.calibrator(np.array([3.0]), low=1, high=5)[0], 0.5)


def test_released_norm_strategies_and_process_sum(judge: OpenAIJudge) -> None:
    from exprl_rewards.rewards.calibration import NormStrategyCalibrator

    batch = [rollout("a", "g", ["1", "3", "5"]), rollout("b", "g", ["5", "4"])]
    pipe = RewardPipeline(judge, mode="process-segment", slicer="newline", reduce="sum",
                          calibrator=NormStrategyCalibrator("extreme_only"))  # fmt: skip
    a, b = pipe.score_sync(batch).results
    assert [s.score for s in a.segments] == [0.0, None, 1.0]
    # a score the judge gave but the strategy leaves out is unscored, with the reason
    assert a.reason == "segment 1: calibration: extreme_only gives score 3 no reward"
    assert a.segments[1].raw == 3.0
    assert b.reason == "segment 1: calibration: extreme_only gives score 4 no reward"
    semi = RewardPipeline(judge, mode="process-segment", slicer="newline", reduce="sum",
                          calibrator=NormStrategyCalibrator("semi_smooth"))  # fmt: skip
    (b,) = semi.score_sync([batch[1]]).results
    assert b.score == pytest.approx(1.8)  # is_process_sum: 1.0 + 0.8


def test_summary_has_the_released_trainers_metrics(judge: OpenAIJudge) -> None:
    batch = [
        rollout("a", "all-one", ["5"]), rollout("b", "all-one", ["5"]),
        rollout("c", "all-zero", ["1"]), rollout("d", "all-zero", ["1"]),
        rollout("e", "mixed", ["1"]), rollout("f", "mixed", ["3"]),
        rollout("g", "none", ["none"]),
    ]  # fmt: skip
    s = RewardPipeline(judge, mode="outcome").score_sync(batch).summary()
    assert s["raw_score_counts"] == {"1": 3, "3": 1, "5": 2}
    assert (s["groups_all_zero"], s["groups_all_one"], s["groups_mixed"]) == (1 / 3,) * 3
    assert s["groups_unscored"] == 0.25
    scores = [1.0, 1.0, 0.0, 0.0, 0.0, 0.5]
    assert s["last_step_mean"] == pytest.approx(np.mean(scores))
    assert s["last_step_std"] == pytest.approx(np.std(scores))
    process = [rollout("a", "g", ["1", "3", "5"]), rollout("b", "g", ["5", "4"])]
    p = RewardPipeline(judge, mode="process-segment", slicer="newline").score_sync(process)
    summary = p.summary()
    assert summary["step_score_mean"] == pytest.approx([0.5, 0.625, 1.0])
    assert summary["steps_per_response"] == {"mean": 2.5, "min": 2, "max": 3}
    assert summary["last_step_mean"] == pytest.approx(np.mean([1.0, 0.75]))


def test_think_strip_grades_only_what_follows_the_thinking(judge: OpenAIJudge) -> None:
    def one(response: str, **kw: object) -> Rollout:
        return Rollout(id="t", group_id="g", question="Q?", reference="R.", response=response)

    # The fault judge answers the last [[score N]] mark it sees, "Score: 4" when it sees none.
    hidden = one("<think>plan [[score 1]]</think>The answer is 3.")
    (kept,) = RewardPipeline(judge, mode="outcome").score_sync([hidden]).results
    (strip,) = RewardPipeline(judge, mode="outcome", think_strip=True).score_sync([hidden]).results
    assert kept.segments[0].raw == 1.0
    assert strip.segments[0].raw == 4.0
    # no </think>: graded as an empty answer (a judge call), not skipped as unscored
    (never,) = (
        RewardPipeline(judge, mode="outcome", think_strip=True)
        .score_sync([one("still thinking [[score 1]]")])
        .results
    )
    assert never.segments[0].raw == 4.0
    assert never.judgements[0].completion_tokens is not None

    text = "<think>plan\n[[score 1]]</think>step a\nstep b [[score 5]]"
    r = Rollout(id="p", group_id="g", question="Q?", reference="R.", response=text,
                token_offsets=tuple((i, i + 1) for i in range(len(text))))  # fmt: skip
    pipe = RewardPipeline(judge, mode="process-segment", slicer="newline", think_strip=True)
    (res,) = pipe.score_sync([r]).results
    assert [s.raw for s in res.segments] == [4.0, 5.0]  # the thinking is not a step
    assert [(s.start, s.end) for s in res.segments] == [(0, text.index("step b")),
                                                         (text.index("step b"), len(text))]  # fmt: skip
    assert res.token_advantages is not None
    assert len(res.token_advantages) == len(text)  # thinking tokens share step 1's value
    assert res.token_advantages[0] == res.segments[0].advantage


def test_a_verifiers_outcome_as_the_last_step(judge: OpenAIJudge) -> None:
    right = rollout("a", "g", ["1", "3"], metadata={"correct": 1.0})
    unknown = rollout("b", "g", ["2", "2"], metadata={})
    pipe = RewardPipeline(judge, mode="process-segment", slicer="newline",
                          last_step=lambda r: r.metadata.get("correct"))  # fmt: skip
    a, b = pipe.score_sync([right, unknown]).results
    assert [s.advantage for s in a.segments] == pytest.approx([0.0 - 1.0, 0.5])
    assert b.reason == "last step: no verifier outcome"
    assert b.score is None
    assert all(s.advantage is None for s in b.segments)


def test_mixed_domain_rows_route_to_their_pipelines_in_input_order(judge: OpenAIJudge) -> None:
    from exprl_rewards import RoutedPipeline, released_routes

    def row(rid: str, group: str, marks: list[str], **metadata: object) -> Rollout:
        text = " ### ".join(f"step {i} [[score {m}]]" for i, m in enumerate(marks))
        return Rollout(id=rid, group_id=group, question="Q?", reference="R.", response=text,
                       metadata=metadata)  # fmt: skip

    batch = [
        row("c1", "code", ["2", "4"], ability="code"),
        row("m1", "math", ["1", "5"], ability="math"),
        row("s1", "mcq", ["3", "3"], ability="Science", extra_info={"answerKey": "B"}),
        row("o1", "open", ["5"], ability="science", extra_info={}),
        row("x1", "other", ["4"], ability="poetry"),
        row("m2", "math", ["5", "5"], ability="math"),
    ]
    routed = RoutedPipeline(released_routes(judge))
    assert routed.assign(batch) == ["code", "math", "science-mcq", "science", "other", "math"]
    results = routed.score_sync(batch).results
    assert [r.id for r in results] == ["c1", "m1", "s1", "o1", "x1", "m2"]
    by_id = {r.id: r for r in results}
    # process rows: one score per ### step; outcome rows: one score for the whole rollout
    assert [s.raw for s in by_id["m1"].segments] == [1.0, 5.0]
    assert [s.raw for s in by_id["s1"].segments] == [3.0, 3.0]
    assert [s.raw for s in by_id["c1"].segments] == [4.0]  # the last mark the judge saw
    assert by_id["c1"].advantage == 0.0  # a group of one
    expected = process_advantages([[0.0, 1.0], [1.0, 1.0]], "delta").values.rows()
    assert [s.advantage for s in by_id["m1"].segments] == pytest.approx(expected[0].tolist())
    assert {n: p.template.name for n, p in routed.routes.items()} == {
        "math": "process-segment", "science-mcq": "process-segment",
        "science": "science-outcome", "code": "code-outcome", "other": "outcome",
    }  # fmt: skip

    split = [row("a", "g", ["1"], ability="math"), row("b", "g", ["1"], ability="code")]
    with pytest.raises(InputError, match="group 'g' takes routes 'math' and 'code'"):
        routed.score_sync(split)
    with pytest.raises(InputError, match="route 'poetry' has no pipeline"):
        RoutedPipeline(released_routes(judge), route=lambda r: "poetry").assign(batch)


def test_the_released_token_boundary_slicer_uses_the_rollouts_offsets(judge: OpenAIJudge) -> None:
    from exprl_rewards.text.slicers import TokenMarkerSlicer

    text = "a [[score 1]] ####b [[score 5]]"
    cut = text.index("####")
    tokens = ((0, cut), (cut, cut + 4), (cut + 4, len(text)))  # "####" is one token
    with_offsets = Rollout(id="t", group_id="g", question="Q?", reference="R.", response=text,
                           token_offsets=tokens)  # fmt: skip
    without = Rollout(id="c", group_id="h", question="Q?", reference="R.", response=text)
    pipe = RewardPipeline(judge, mode="process-segment", slicer=TokenMarkerSlicer())
    tok, char = pipe.score_sync([with_offsets, without]).results
    assert [s.end for s in tok.segments] == [cut + 4, len(text)]  # after the whole token
    assert [s.end for s in char.segments] == [cut + 3, len(text)]  # after the first ###
    assert [s.raw for s in tok.segments] == [1.0, 5.0]
    assert tok.token_advantages is not None
    assert len(tok.token_advantages) == 3
