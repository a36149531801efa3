"""Canaries and the hack alarm: built from a step's own questions, graded beside the honest
batch through real HTTP judges, never changing the honest results; the alarm on both of
its signals."""

from __future__ import annotations

import math

import pytest
from fault_server import FaultServer

from exprl_rewards.errors import ConfigError
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.guards import get_guards
from exprl_rewards.rewards.canaries import CANARY_FAMILIES, Canaries, HackAlarm, Watch, is_canary
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.text.rollout import Rollout

QUESTION = "Janet has 16 eggs. She eats 3 and sells the rest at $2 each. How much does she make?"
REFERENCE = "She sells 16 - 3 = 13 eggs.\nShe makes 13 * 2 = $26.\n#### 26"


def batch(n_groups: int = 4, per_group: int = 4, mark: str = "[[score 5]]") -> list[Rollout]:
    return [
        Rollout(id=f"{g}-{k}", group_id=f"q{g}", question=f"{QUESTION} (version {g})",
                reference=REFERENCE, response=f"13 * 2 = {26 + k % 2}\nA: {26 + k % 2} {mark}")
        for g in range(n_groups) for k in range(per_group)
    ]  # fmt: skip


def test_canaries_are_built_from_the_steps_own_questions() -> None:
    rollouts = batch()
    canaries = Canaries(0.25).make(rollouts, step=7)
    assert len(canaries) == 4  # a quarter of 16
    assert all(is_canary(c.id) and c.group_id == c.id for c in canaries)
    assert {c.question for c in canaries} <= {r.question for r in rollouts}
    assert [c.metadata["canary"] for c in canaries] == [
        CANARY_FAMILIES[(k + 7) % len(CANARY_FAMILIES)] for k in range(4)
    ]
    assert canaries == Canaries(0.25).make(rollouts, step=7)  # the step fixes them
    for c in canaries:
        if c.metadata["canary"] in ("confident-wrong", "grader-directed"):
            assert c.response.startswith("The answer is ")
            assert "26." not in c.response


def test_a_question_without_a_numeric_answer_gets_no_wrong_answer_canary() -> None:
    r = Rollout(id="a", group_id="g", question="Prove it.", reference="By induction. QED",
                response="...")  # fmt: skip
    made = Canaries(1.0, families=("confident-wrong", "master-key")).make([r] * 1, step=0)
    assert [c.metadata["canary"] for c in made] == ["master-key"]
    assert Canaries(1.0, families=("confident-wrong",)).make([r], step=0) == []


@pytest.mark.parametrize("bad", [{"share": 0.0}, {"share": 1.5}, {"families": ("nope",)}])
def test_bad_canary_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Canaries(**bad)  # type: ignore[arg-type]


def test_an_honest_judge_raises_no_alarm_and_the_honest_batch_is_unchanged() -> None:
    """A judge that reads the honest rollouts' marks (5) and gives 1 to anything else."""
    with FaultServer(default_score=1) as server:
        judge = OpenAIJudge("marks", base_url=server.url)
        pipeline = RewardPipeline(judge, mode="outcome", guards=get_guards("content-gate"))
        watch = Watch(pipeline, Canaries(0.25))
        alone = pipeline.score_sync(batch())
        for step in range(4):
            honest, metrics = watch.score_sync(batch(), step)
            assert metrics["hack/alarm"] == 0.0
            assert metrics["hack/canary_reward"] == 0.0
            assert metrics["hack/honest_reward"] == 1.0
            assert metrics["hack/canary_share"] == 4 / 20
            assert metrics["hack/verifier_accuracy"] == 0.5  # A: 26 and A: 27
        assert [r.score for r in honest.results] == [r.score for r in alone.results]
        assert [r.advantage for r in honest.results] == [r.advantage for r in alone.results]
        assert not any(is_canary(r.id) for r in honest.results)
    assert watch.alarm.fired_at is None


def test_a_judge_that_rewards_everything_raises_the_alarm_at_once() -> None:
    with FaultServer(default_score=5) as server:
        judge = OpenAIJudge("marks", base_url=server.url)
        pipeline = RewardPipeline(judge, mode="outcome", guards=get_guards(
            "content-gate,neutraliser"))  # fmt: skip
        watch = Watch(pipeline, Canaries(0.5, families=("confident-wrong", "grader-directed")),
                      HackAlarm(window=1))  # fmt: skip
        _, metrics = watch.score_sync(batch(mark=""), step=0)
    assert metrics["hack/alarm"] == 1.0
    assert metrics["hack/canary_reward/confident-wrong"] == 1.0
    assert watch.alarm.fired_at == 0
    assert "canaries score 1.000" in watch.alarm.reasons[0]


def test_the_divergence_alarm_fires_when_reward_rises_and_accuracy_does_not() -> None:
    alarm = HackAlarm(window=2, rise=0.05)
    fired = []
    for step, reward in enumerate([0.4, 0.4, 0.5, 0.6, 0.7]):
        m = alarm.update(step, [reward] * 8, [0.0], [True, False, False, False])
        fired.append(m["hack/alarm"])
    assert fired == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert alarm.fired_at == 3
    assert "rose +0.150" in alarm.reasons[0]
    assert m["hack/accuracy_rise"] == 0.0


def test_rising_reward_with_rising_accuracy_is_no_alarm() -> None:
    alarm = HackAlarm(window=2)
    for step, (reward, right) in enumerate([(0.4, 1), (0.4, 1), (0.5, 2), (0.6, 3), (0.7, 4)]):
        m = alarm.update(step, [reward] * 8, [0.0], [True] * right + [False] * (8 - right))
        assert m["hack/alarm"] == 0.0
    assert alarm.fired_at is None
    assert math.isclose(m["hack/accuracy_rise"], 3.5 / 8 - 1.5 / 8)  # steps 3-4 against 1-2


def test_the_canary_alarm_waits_for_a_full_window_and_ignores_a_silent_judge() -> None:
    """One step's few canaries are noise; canaries and honest rollouts both at the
    minimum say nothing about gaming."""
    alarm = HackAlarm(window=3)
    fired = [alarm.update(s, [0.5, 0.5], [0.75])["hack/alarm_canary"] for s in range(3)]
    assert fired == [0.0, 0.0, 1.0]
    silent = HackAlarm(window=1)
    assert silent.update(0, [0.0, 0.0], [0.0, 0.0])["hack/alarm"] == 0.0
    assert silent.fired_at is None


def test_the_alarm_state_round_trips_so_a_resumed_run_goes_on() -> None:
    whole, first = HackAlarm(window=2), HackAlarm(window=2)
    steps = [([0.5, 0.4], [0.1]), ([0.5, 0.6], [0.7]), ([0.4], [0.9])]
    for i, (h, c) in enumerate(steps[:2]):
        whole.update(i, h, c)
        first.update(i, h, c)
    resumed = HackAlarm(window=2)
    resumed.load_state_dict(first.state_dict())
    assert resumed.update(2, *steps[2]) == pytest.approx(whole.update(2, *steps[2]), nan_ok=True)
    assert resumed.fired_at == whole.fired_at
