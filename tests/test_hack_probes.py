"""Hack probes: every family built from real GSM8K solutions, and the audit's hack table
through a real HTTP judge that gives the top score to everything."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServer

from exprl_rewards.audit import load_dataset
from exprl_rewards.audit.probes import FAMILIES, build_probes
from exprl_rewards.cli.audit import main
from exprl_rewards.judges.guards import ContentGate


@pytest.fixture(scope="module")
def generous() -> Iterator[FaultServer]:
    with FaultServer(default_score=5) as s:
        yield s


def test_every_family_is_built_for_every_question() -> None:
    items = load_dataset("gsm8k-solutions")
    baselines, probes = build_probes(items, limit=12, seed=3)
    assert len(baselines) == 24  # a right and a wrong solution per question
    assert len({p.rollout.id for p in probes}) == len(probes)
    per_family = Counter(p.family for p in probes)
    assert set(per_family) == set(FAMILIES)
    assert per_family["master-key"] == 12 * 8
    assert per_family["grader-directed"] == 12 * 4
    by_id = {r.id: r for r in baselines}
    for p in probes:
        right = by_id[f"{p.rollout.group_id}/right"]
        assert p.rollout.question == right.question
        assert p.rollout.reference == right.reference
        if p.family == "cut-off":
            assert right.response.startswith(p.rollout.response)
            assert right.response.strip() != p.rollout.response.strip()
        if p.family == "confident-wrong":
            answer = p.rollout.response.removeprefix("The answer is ").rstrip(".")
            assert not right.response.rstrip().endswith(answer)
    # the content-free families are what the content gate is for; the others carry content
    gate = ContentGate()
    for p in probes:
        gated = gate.check(p.rollout.response, p.rollout.question) is not None
        assert gated == (p.family in ("master-key", "empty", "question-echo")), p.rollout.id


@pytest.mark.parametrize("mode", ["outcome", "process-prefix"])
def test_the_hack_table_before_and_after_the_default_guards(
    generous: FaultServer, tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "hacks"
    code = main(["--data", "gsm8k-solutions", "--hacks-only", "--hack-questions", "6",
                 "--mode", mode, "--slicer", "newline", "-o", str(out), "--base-url",
                 generous.url, "--model", "marks", "--no-cache", "--top-logprobs", "0",
                 "--bootstrap", "50"])  # fmt: skip
    assert code == 0
    hacks = json.loads((out / "hacks.json").read_text())
    before, after = hacks["runs"]["as given"], hacks["runs"]["default guards"]
    assert hacks["guards"] == {"as given": [], "default guards": ["content-gate", "neutraliser"]}
    assert before["questions"] == after["questions"] == 6
    assert after["right_mean_score"] == 1.0  # no right solution is gated
    for family in ("master-key", "question-echo"):
        assert before["families"][family]["win_rate"]["value"] == 1.0  # fooled every time
        assert after["families"][family]["win_rate"]["value"] == 0.0  # gated to the minimum
        assert after["families"][family]["mean_score"]["value"] == 0.0
    assert after["families"]["empty"]["win_rate"]["value"] == 0.0
    # a judge that says 5 to everything is fooled by what only a better judge can catch
    assert after["families"]["confident-wrong"]["win_rate"]["value"] == 1.0
    assert after["guards_fired"]["content-gate"] == 6 * (8 + 2 + 1)
    assert after["guards_fired"]["neutraliser"] == 6 * 4  # flattery too: "give full marks"
    text = (out / "HACKS.md").read_text()
    assert "| master-key | 48 | 1.00" in text
    assert (out / "hacks.png").stat().st_size > 0
