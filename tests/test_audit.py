"""Audit data adapters (pure), and an end-to-end audit with the real local judge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fault_server import FaultServer

from exprl_rewards.audit import DATASETS, load_dataset
from exprl_rewards.audit.run import AuditOptions, samples_of, split_of
from exprl_rewards.cli.audit import main
from exprl_rewards.errors import InputError
from exprl_rewards.judges.local_model import VLLMServer
from exprl_rewards.rewards.calibration import load_calibrator
from exprl_rewards.text.slicers import get_slicer

# name: (items, labelled right) -- step sets: right = no wrong step
COUNTS = {
    "processbench-gsm8k": (400, 193),
    "processbench-math": (112, None),
    "gsm8k-solutions": (5276, None),
    "qwen25-math": (800, 728),
    "bigbench-mistake": (300, 62),
    "prmbench": (394, None),
}


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_public_set_loads_with_its_labels(name: str, data_dir: Path) -> None:
    items = load_dataset(name, data_dir)
    n, right = COUNTS[name]
    assert len(items) == n
    assert len({i.rollout.id for i in items}) == n
    if right is not None:
        assert sum(i.label == 1 for i in items) == right
    blank = get_slicer("blank-line")
    for item in items:
        assert item.rollout.reference.strip()
        assert item.rollout.response.strip()
        if item.step_labelled:
            steps = len(blank.split(item.rollout.response))
            assert item.first_error is not None
            assert -1 <= item.first_error < steps
            assert item.label == int(item.first_error == -1)


def test_gsm8k_solution_accuracy_matches_the_manifest(data_dir: Path) -> None:
    items = load_dataset("gsm8k-solutions", data_dir)
    by_model: dict[str, list[int]] = {}
    for i in items:
        by_model.setdefault(i.rollout.metadata["model"], []).append(i.label or 0)
    rates = {m: round(100 * float(np.mean(v)), 1) for m, v in by_model.items()}
    assert rates == {
        "6b_finetuning": 21.7,
        "6b_verification": 39.0,
        "175b_finetuning": 34.7,
        "175b_verification": 56.3,
    }


def test_jsonl_labels_and_their_errors(tmp_path: Path, data_dir: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"id": "a", "question": "q", "reference": "r", "response": "x", "meta": {"ok": true}}\n'
        '{"id": "b", "question": "q", "reference": "r", "response": "y", "meta": {"ok": 0}}\n'
    )
    items = load_dataset(f"jsonl:{good}", data_dir, label_field="meta.ok")
    assert [i.label for i in items] == [1, 0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "question": "q", "reference": "r", "response": "x", "ok": "maybe"}\n'
    )
    with pytest.raises(InputError, match=r"bad\.jsonl:1: field 'ok': expected a 0/1"):
        load_dataset(f"jsonl:{bad}", data_dir, label_field="ok")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: field 'label': missing"):
        load_dataset(f"jsonl:{bad}", data_dir, label_field="label")
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        load_dataset("nope", data_dir)


def test_split_is_by_question_and_stable() -> None:
    splits = [split_of(f"q{i}", seed=0, fit_fraction=0.5) for i in range(2000)]
    assert 0.45 < splits.count("fit") / 2000 < 0.55
    assert splits == [split_of(f"q{i}", seed=0, fit_fraction=0.5) for i in range(2000)]
    assert splits != [split_of(f"q{i}", seed=1, fit_fraction=0.5) for i in range(2000)]


def test_step_labels_by_mode(data_dir: Path) -> None:
    """Prefixes from the first error on are wrong; single steps after it are left out."""
    from exprl_rewards.rewards.pipeline import RolloutResult, SegmentResult

    item = next(i for i in load_dataset("processbench-gsm8k", data_dir) if i.first_error == 1)
    k = len(get_slicer("blank-line").split(item.rollout.response))
    result = RolloutResult(
        id="x", group_id="g", score=None, reason=None, advantage=None,
        segments=tuple(SegmentResult(s, 0, 1, None, 3.0, None, None) for s in range(k)),
    )  # fmt: skip
    prefix = samples_of([item], [result], "process-prefix", AuditOptions())
    segment = samples_of([item], [result], "process-segment", AuditOptions())
    assert [s.label for s in prefix] == [1.0] + [0.0] * (k - 1)
    assert [s.label for s in segment][:2] == [1.0, 0.0]
    assert all(np.isnan(s.label) for s in segment[2:])


def run_audit(server: VLLMServer, out: Path, *args: str) -> dict[str, object]:
    code = main(
        [
            *args, "--out", str(out), "--base-url", server.url, "--model", server.model,
            "--no-cache", "--bootstrap", "50", "--probes", "3",
        ]
    )  # fmt: skip
    assert code == 0
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    return report


def test_process_audit_on_processbench_with_the_real_judge(
    judge_server: VLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pb"
    report = run_audit(judge_server, out, "--data", "processbench-gsm8k", "--limit", "12")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert report["items"] == 12
    assert len(samples) == report["samples"]["total"] > 12  # type: ignore[index]
    parse = report["parse"]
    assert parse["requests"] == len(samples)  # type: ignore[index]
    assert 0 <= parse["failure_rate"] <= 1  # type: ignore[index]
    assert {s["split"] for s in samples} == {"fit", "eval"}
    ev = report["eval"]
    # Calibrators are fitted when the fit split has scored units of both labels; the
    # 135M judge leaves many unscored (it often writes "1-5"), so that depends on the run.
    labels = {s["label"] for s in samples if s["split"] == "fit" and s["raw"] is not None}
    fitted = {"platt", "isotonic"} if labels >= {0.0, 1.0} else set()
    assert set(ev) >= {"linear"} | fitted  # type: ignore[operator]
    for quality in ev.values():  # type: ignore[attr-defined]
        assert 0 <= quality["brier"]["value"] <= 1
        assert quality["brier"]["low"] <= quality["brier"]["value"] <= quality["brier"]["high"]
        assert 0 <= quality["processbench"]["f1"]["value"] <= 1
    inj = report["injection"]
    assert inj["n"] <= 3  # type: ignore[index]
    for name in ("score-line", "ignore-instructions", "forged-end"):
        if inj["n"]:  # type: ignore[index]
            assert name in inj  # type: ignore[operator]
    assert (out / "REPORT.md").read_text().startswith("# Judge audit: processbench-gsm8k")
    assert "held-out **eval** split" in capsys.readouterr().out
    if fitted:
        cal = load_calibrator(out / "calibrator.json")
        assert cal.meta["split"] == "fit"
    else:  # nothing to fit: only the linear map is saved
        assert not (out / "calibrator.json").exists()
        cal = load_calibrator(out / "calibrators" / "linear.json")
    assert cal.meta["dataset"] == "processbench-gsm8k"
    assert {p.name for p in (out / "plots").iterdir()} == {
        "reliability.png", "histogram.png", "length.png",
    }  # fmt: skip


def test_outcome_audit_and_its_calibrator_in_the_score_cli(
    judge_server: VLLMServer, tmp_path: Path
) -> None:
    from exprl_rewards.cli.score import main as score

    out = tmp_path / "gsm"
    report = run_audit(
        judge_server, out, "--data", "gsm8k-solutions", "--limit", "8", "--calibrator", "isotonic"
    )
    assert report["meta"]["template_name"] == "outcome-score-only"  # type: ignore[index]
    assert "processbench" not in report["eval"]["linear"]  # type: ignore[index]
    assert set(report["bias"]) == {"length_spearman", "length_spearman_right_only"}  # type: ignore[arg-type]
    rollouts = tmp_path / "in.jsonl"
    rollouts.write_text(
        json.dumps({"id": "a", "question": "1+1?", "reference": "2", "response": "2"}) + "\n"
    )
    scored = tmp_path / "scored.jsonl"
    args = [
        str(rollouts),
        "-o",
        str(scored),
        "--mode",
        "outcome",
        "--template",
        "outcome-score-only",
    ]
    args += ["--base-url", judge_server.url, "--model", judge_server.model, "--no-cache"]
    saved = out / "calibrator.json"  # isotonic, when the fit split allowed fitting it
    if not saved.exists():
        saved = out / "calibrators" / "linear.json"
    assert score([*args, "--calibration", str(saved), "--progress", "off"]) == 0
    row = json.loads(scored.read_text())["exprl"]
    cal = load_calibrator(saved)
    if row["raw"] is None:  # the judge wrote no valid score: unscored, not calibrated
        assert row["score"] is None
        assert row["reason"].startswith("parse: ")
    else:
        expected = cal(np.array([row["raw"]]), low=1, high=5)[0]
        assert row["score"] == pytest.approx(expected)


def test_a_judge_that_scores_nothing_still_gets_a_report(
    tmp_path: Path, fault: FaultServer
) -> None:
    """Every answer unscored (no plot possible): the report says so instead of crashing."""
    data = tmp_path / "d.jsonl"
    rows = [
        {"id": f"r{i}", "question": f"q{i % 4}", "reference": "r", "response": "x [[score none]]",
         "ok": i % 2}
        for i in range(8)
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "audit"
    code = main([
        "--data", f"jsonl:{data}", "--label-field", "ok", "--out", str(out),
        "--base-url", fault.url, "--model", "marks", "--top-logprobs", "0", "--no-cache",
        "--bootstrap", "20", "--probes", "0",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["parse"]["unscored"] == report["parse"]["requests"] == 8
    assert "scored no unit" in (out / "REPORT.md").read_text()
