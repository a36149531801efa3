"""The PRM backend: step positions on real tokenizers, one forward pass a rollout, and
scores that flow through the pipeline and the score CLI.

No process reward model can be installed here. The Shepherd convention runs on the
embedded SmolLM2, which is **not** a PRM (its "+"/"-" probabilities mean nothing about
the steps): the tests check the plumbing, not the grades. The Qwen2.5-Math-PRM
convention's positions are checked on SmolLM2's tokenizer with ``<extra_0>`` added as a
special token, as Qwen's tokenizer has it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exprl_rewards import Rollout
from exprl_rewards.judges.local_model import default_model_dir
from exprl_rewards.judges.prm import SEPARATOR, TAG, PRMJudge, layout
from exprl_rewards.rewards.pipeline import RewardPipeline

Q = "What is 6 * 7 + 1?"
STEPS = ["6 * 7 = 42.", "Then 42 + 1 = 43.", "The answer is 43."]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_dir()))


@pytest.fixture(scope="module")
def qwen_tokenizer(tokenizer: Any) -> Any:
    import copy

    qwen = copy.deepcopy(tokenizer)
    qwen.add_special_tokens({"additional_special_tokens": [SEPARATOR]})
    return qwen


def test_shepherd_positions_are_the_last_token_of_each_tag(tokenizer: Any) -> None:
    shape = layout(tokenizer, Q, STEPS, "shepherd")
    assert (
        shape.text == f"{Q} 6 * 7 = 42. {TAG}\nThen 42 + 1 = 43. {TAG}\nThe answer is 43. {TAG}\n"
    )
    assert len(shape.positions) == 3
    for position in shape.positions:
        text_so_far = tokenizer.decode(list(shape.ids[: position + 1]))
        assert text_so_far.endswith(TAG)
        assert not tokenizer.decode(list(shape.ids[:position])).endswith(TAG)


def test_qwen_positions_are_the_separator_tokens(qwen_tokenizer: Any) -> None:
    shape = layout(qwen_tokenizer, Q, STEPS, "qwen")
    separator = qwen_tokenizer.convert_tokens_to_ids(SEPARATOR)
    assert [shape.ids[p] for p in shape.positions] == [separator] * 3
    assert shape.ids.count(separator) == 3
    assert "<|im_start|>assistant\n6 * 7 = 42.<extra_0>Then 42 + 1 = 43.<extra_0>" in shape.text
    assert "Please reason step by step" in shape.text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=25),
                min_size=1, max_size=5))  # fmt: skip
def test_no_step_text_adds_or_hides_a_step(steps: list[str]) -> None:
    """Any text, a forged separator or tag included, keeps one position per step, in
    order, each on the mark that closes its step."""
    from transformers import AutoTokenizer

    qwen = AutoTokenizer.from_pretrained(str(default_model_dir()))
    qwen.add_special_tokens({"additional_special_tokens": [SEPARATOR]})
    separator = qwen.convert_tokens_to_ids(SEPARATOR)
    forged = [f"{s}{SEPARATOR}{TAG}" for s in steps]
    for convention in ("qwen", "shepherd"):
        shape = layout(qwen, Q, forged, convention)  # type: ignore[arg-type]
        assert len(shape.positions) == len(steps)
        assert list(shape.positions) == sorted(set(shape.positions))
    assert layout(qwen, Q, forged, "qwen").ids.count(separator) == len(steps)


@pytest.fixture(scope="module")
def shepherd() -> PRMJudge:
    return PRMJudge(default_model_dir(), convention="shepherd", name="smollm2-not-a-prm")


def test_one_forward_pass_a_rollout_and_each_step_read_at_its_tag(
    shepherd: PRMJudge, tokenizer: Any
) -> None:
    import torch

    pipeline = RewardPipeline(shepherd, mode="process-tagged", slicer="newline")
    rollouts = [
        Rollout(id=str(i), group_id="g", question=Q, reference="43", response="\n".join(steps))
        for i, steps in enumerate((STEPS, ["6 * 7 = 48.", "48 + 1 = 49."]))
    ]
    before = shepherd.forwards
    batch = pipeline.score_sync(rollouts)
    assert shepherd.forwards - before == 2
    assert batch.summary()["judge_requests"] == 2
    first = batch.results[0]
    assert len(first.segments) == 3
    # the same probabilities, computed by hand from the model's logits at the tags
    _, model = shepherd.loaded()
    shape = layout(tokenizer, Q, STEPS, "shepherd")
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([shape.ids])).logits[0]
    plus, minus = tokenizer.convert_tokens_to_ids("+"), tokenizer.convert_tokens_to_ids("-")
    for segment, position in zip(first.segments, shape.positions, strict=True):
        pair = logits[position, [plus, minus]].float().softmax(-1)
        assert segment.score == pytest.approx(float(pair[0]), abs=1e-5)  # calibrated: p
        assert segment.raw == pytest.approx(1 + 4 * float(pair[0]), abs=1e-4)
    assert first.score == first.segments[-1].score
    assert all(math.isfinite(a) for a in first.token_advantages or [0.0])


def test_the_score_cli_takes_a_prm(tmp_path: Path) -> None:
    from exprl_rewards.cli.score import main

    rows = [{"id": "a", "group_id": "g", "question": Q, "reference": "43",
             "response": "\n".join(STEPS)},
            {"id": "b", "group_id": "g", "question": Q, "reference": "43",
             "response": "6 * 7 = 48.\n48 + 1 = 49."}]  # fmt: skip
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main([str(inp), "-o", str(out), "--prm", str(default_model_dir()),
                 "--prm-convention", "shepherd", "--slicer", "newline", "--no-cache"])  # fmt: skip
    assert code == 0
    written = [json.loads(line)["exprl"] for line in out.read_text().splitlines()]
    assert [len(r["segments"]) for r in written] == [3, 2]
    assert all(0.0 <= s["score"] <= 1.0 for r in written for s in r["segments"])
    assert written[0]["settings"]["mode"] == "process-tagged"
    assert written[0]["settings"]["judge"] == "prm:smollm2-135m-instruct"
    assert written[0]["judge"]["requests"] == 1  # three steps, one pass


def test_the_prm_needs_the_tagged_mode(tmp_path: Path) -> None:
    from exprl_rewards.cli.score import main

    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"question": Q, "reference": "43", "response": "x"}) + "\n")
    code = main([str(inp), "-o", str(tmp_path / "o.jsonl"), "--prm", "x",
                 "--mode", "process-prefix"])  # fmt: skip
    assert code != 0


def test_the_audit_takes_a_prm_one_request_a_trace(tmp_path: Path) -> None:
    """--prm on a step-labelled set: process-tagged by default, one forward pass a trace,
    a sample (a labelled unit) per step."""
    from exprl_rewards.cli.audit import main

    out = tmp_path / "audit"
    code = main(["--data", "processbench-gsm8k", "--limit", "3", "--out", str(out),
                 "--prm", str(default_model_dir()), "--prm-convention", "shepherd",
                 "--no-cache", "--bootstrap", "20", "--probes", "0"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert report["items"] == 3
    assert report["parse"]["requests"] == 3
    assert report["parse"]["units"] == len(samples) > 3
    assert report["parse"]["unscored"] == 0
    refused = main(["--data", "gsm8k-solutions", "--limit", "2", "--out", str(tmp_path / "o"),
                    "--prm", str(default_model_dir()), "--no-cache"])  # fmt: skip
    assert refused != 0  # outcome labels: a PRM has no steps to score
