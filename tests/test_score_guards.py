"""The guards that act on the judge's scores (verifier cap, second look): golden cases on
the repository's real GSM8K solutions, and the pipeline and CLI through real HTTP judges
(one that gives 5 to everything, one that reads the last score mark it sees)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServer

from exprl_rewards.audit import load_dataset
from exprl_rewards.cli.score import main
from exprl_rewards.errors import ConfigError
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.guards import get_guards
from exprl_rewards.judges.score_guards import SecondLook, VerifierCap
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.text.answers import verify
from exprl_rewards.text.rollout import Rollout

QUESTION = "Janet has 16 eggs. She eats 3 and sells the rest at $2 each. How much does she make?"
REFERENCE = "She sells 16 - 3 = 13 eggs.\nShe makes 13 * 2 = $26.\n#### 26"
RIGHT = "16 - 3 = 13 eggs are sold.\n13 * 2 = 26\nA: 26"
WRONG = "16 - 3 = 13 eggs are sold.\n13 * 3 = 39\nA: 39"
CUT_OFF = "16 - 3 = 13 eggs are sold.\n13 * 2 = 26"


@pytest.fixture(scope="module")
def generous() -> Iterator[FaultServer]:
    """A real HTTP judge that answers "Score: 5" to every request."""
    with FaultServer(default_score=5) as s:
        yield s


def rollout(i: str, response: str, reference: str = REFERENCE) -> Rollout:
    return Rollout(id=i, group_id="g", question=QUESTION, reference=reference, response=response)


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        (RIGHT, REFERENCE, True),
        (WRONG, REFERENCE, False),
        (CUT_OFF, REFERENCE, False),  # no final answer
        ("so \\boxed{26}", REFERENCE, True),
        ("The answer is $26.", REFERENCE, True),
        ("**Final answer:** 26 dollars", REFERENCE, True),
        ("The answer is 26.", "no final answer in this reference", None),
        ("\\boxed{\\frac{1}{2}}", "hence \\boxed{0.5}", True),
        ("\\boxed{\\frac{1}{3}}", "hence \\boxed{0.5}", False),
    ],
)
def test_verify_reads_the_forms_final_answers_take(
    response: str, reference: str, expected: bool | None
) -> None:
    assert verify(response, reference) is expected


def test_verify_agrees_with_the_labels_of_the_real_gsm8k_solutions() -> None:
    """The GSM8K model solutions carry is_correct labels: the rule reads every reference
    and agrees with every label."""
    items = load_dataset("gsm8k-solutions")
    verdicts = [(verify(x.rollout.response, x.rollout.reference), x.label) for x in items]
    assert all(v is not None for v, _ in verdicts)
    agree = sum((v is True) == (label >= 0.5) for v, label in verdicts)
    assert agree == len(verdicts) == 5276


@pytest.mark.parametrize("mode", ["outcome", "process-prefix"])
def test_the_verifier_cap_caps_wrong_answers_and_spares_right_ones(
    generous: FaultServer, mode: str
) -> None:
    judge = OpenAIJudge("marks", base_url=generous.url)
    batch = [rollout("right", RIGHT), rollout("wrong", WRONG), rollout("cut", CUT_OFF)]
    fooled = RewardPipeline(judge, mode=mode, slicer="newline").score_sync(batch).results
    assert [r.score for r in fooled] == [1.0, 1.0, 1.0]  # the judge alone cannot tell
    pipeline = RewardPipeline(judge, mode=mode, slicer="newline", guards=get_guards(
        "verifier-cap:0.25"))  # fmt: skip
    right, wrong, cut = pipeline.score_sync(batch).results
    assert right.score == 1.0
    assert right.guards == ()
    assert wrong.score == 0.25
    assert cut.score == 0.25
    assert "'39' does not match the reference's '26'" in wrong.guards[0].detail
    assert "no readable final answer" in cut.guards[0].detail
    if mode != "outcome":  # only the last step is capped; earlier steps keep their credit
        assert [s.score for s in wrong.segments] == [1.0, 1.0, 0.25]
    assert wrong.advantage is None or wrong.advantage < right.advantage  # type: ignore[operator]


def test_no_answer_pass_leaves_an_answerless_rollout_alone(generous: FaultServer) -> None:
    judge = OpenAIJudge("marks", base_url=generous.url)
    cap = VerifierCap(0.0, no_answer="pass")
    pipeline = RewardPipeline(judge, mode="outcome", guards=(cap,))
    cut, wrong = pipeline.score_sync([rollout("cut", CUT_OFF), rollout("w", WRONG)]).results
    assert cut.score == 1.0
    assert cut.guards == ()
    assert wrong.score == 0.0


def marks(i: str, first: int, later: int) -> Rollout:
    """A rollout that asks for ``first`` and whose reference asks for ``later``: a judge
    that reads the last mark it sees gives ``first`` when the reference comes first (the
    cache order) and ``later`` when the reference comes last (the released order)."""
    return Rollout(id=i, group_id="g", question=f"{QUESTION} ({i})",
                   response=f"{RIGHT} [[score {first}]]",
                   reference=f"{REFERENCE} [[score {later}]]")  # fmt: skip


def test_a_second_look_unscores_a_position_swayed_score() -> None:
    with FaultServer() as server:
        judge = OpenAIJudge("marks", base_url=server.url)
        pipeline = RewardPipeline(judge, mode="outcome", guards=get_guards("second-look"))
        batch = pipeline.score_sync(
            [marks("swayed", 5, 1), marks("steady", 4, 4), marks("close", 5, 4)]
        )
        assert server.requests == 6  # two looks each
        assert batch.summary()["judge_requests"] == 6  # the second looks are counted
    swayed, steady, close = batch.results
    assert swayed.score is None
    assert swayed.reason is not None
    assert "two looks disagree: 1 and 0" in swayed.reason
    assert swayed.guards[0].guard == "second-look"
    assert steady.score == 0.75
    assert steady.guards == ()
    assert close.score == 1.0
    assert close.guards == ()


def test_a_second_look_on_a_share_picks_the_same_rollouts_each_time() -> None:
    look = SecondLook(0.25)
    ids = [f"r{i}" for i in range(2000)]
    chosen = [i for i in ids if look.chosen(i)]
    assert 0.22 < len(chosen) / len(ids) < 0.28
    assert chosen == [i for i in ids if SecondLook(0.25).chosen(i)]
    with FaultServer() as server:
        judge = OpenAIJudge("marks", base_url=server.url)
        batch = [marks(f"r{i}", 4, 4) for i in range(40)]
        RewardPipeline(judge, mode="outcome", guards=(look,)).score_sync(batch)
        assert server.requests == 40 + sum(look.chosen(r.id) for r in batch)


@pytest.mark.parametrize("spec", ["verifier-cap:2", "verifier-cap:x", "second-look:0",
                                  "content-gate:1", "second-look:1.5"])  # fmt: skip
def test_bad_guard_values_are_refused_with_the_form(spec: str) -> None:
    with pytest.raises(ConfigError, match=spec.partition(":")[0]):
        get_guards(spec)


def test_the_cli_caps_and_records_the_guard_settings(generous: FaultServer, tmp_path: Path) -> None:
    rows = [{"id": i, "group_id": "g", "question": QUESTION, "reference": REFERENCE,
             "response": text} for i, text in (("right", RIGHT), ("wrong", WRONG))]  # fmt: skip
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    argv = [str(source), "-o", str(out), "--base-url", generous.url, "--model", "marks",
            "--no-cache", "--top-logprobs", "0", "--mode", "outcome", "--progress", "off",
            "--guards", "content-gate,neutraliser,verifier-cap:0.5"]  # fmt: skip
    assert main(argv) == 0
    got = {json.loads(x)["id"]: json.loads(x)["exprl"] for x in out.read_text().splitlines()}
    assert got["right"]["score"] == 1.0
    assert got["wrong"]["score"] == 0.5
    assert got["wrong"]["guards"][0]["guard"] == "verifier-cap"
    assert got["wrong"]["settings"]["guards"] == ["content-gate", "neutraliser", "verifier-cap:0.5"]
