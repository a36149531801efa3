"""Audits on the user's own step-labelled traces, in the common layouts: a list of steps
with the first wrong one (ProcessBench), per-step ratings (PRM800K: -1/0/1) and binary
step labels (Math-Shepherd: 0/1). Each file is written from real ProcessBench traces, so
every layout must give back the built-in adapter's steps and labels exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.audit import load_dataset
from exprl_rewards.cli.audit import main
from exprl_rewards.errors import InputError


def write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


@pytest.fixture(scope="module")
def traces(data_dir: Path) -> list[dict[str, Any]]:
    """24 ProcessBench GSM8K traces (erroneous and correct) with their references."""
    refs = {
        json.loads(line)["question"].strip(): json.loads(line)["answer"]
        for line in (data_dir / "references" / "gsm8k_test.jsonl").read_text().splitlines()
    }
    rows = json.loads((data_dir / "step_labels" / "processbench" / "gsm8k.json").read_text())
    picked = rows[:12] + [r for r in rows if r["label"] == -1][:12]
    return [{"id": r["id"], "question": r["problem"], "reference": refs[r["problem"].strip()],
             "steps": r["steps"], "label": r["label"]} for r in picked]  # fmt: skip


def ratings(label: int, n: int) -> list[int]:
    """PRM800K-style: good steps, then -1 at the first error, neutral after it."""
    return [1] * n if label < 0 else [1] * label + [-1] + [0] * (n - label - 1)


def test_the_three_layouts_give_back_the_labels(
    traces: list[dict[str, Any]], tmp_path: Path
) -> None:
    first = load_dataset(write(tmp_path / "pb.jsonl", traces), steps_field="steps",
                         first_error_field="label")  # fmt: skip
    prm = [dict(t, ratings=ratings(t["label"], len(t["steps"]))) for t in traces]
    rated = load_dataset(write(tmp_path / "prm.jsonl", prm), steps_field="steps",
                         step_labels_field="ratings")  # fmt: skip
    shepherd = [dict(t, correct=[i < t["label"] or t["label"] < 0 for i in range(len(t["steps"]))])
                for t in traces]  # fmt: skip
    binary = load_dataset(write(tmp_path / "ms.jsonl", shepherd), steps_field="steps",
                          step_labels_field="correct")  # fmt: skip
    expected = [t["label"] for t in traces]
    for items in (first, rated, binary):
        assert [i.first_error for i in items] == expected
        assert [i.label for i in items] == [int(x < 0) for x in expected]
        assert [len(i.rollout.response.split("\n\n")) for i in items] == [
            len(t["steps"]) for t in traces
        ]
    # A PRM800K trace with a neutral step and no -1 is right on the ternary scale only.
    neutral = [dict(traces[-1], ratings=[1, 0] + [1] * (len(traces[-1]["steps"]) - 2))]
    path = write(tmp_path / "neutral.jsonl", neutral)
    kw: dict[str, Any] = {"steps_field": "steps", "step_labels_field": "ratings"}
    assert load_dataset(path, **kw, step_labels_scale="ternary")[0].first_error == -1
    assert load_dataset(path, **kw)[0].first_error == 1  # auto reads it as binary


def test_bad_step_rows_name_file_line_and_field(tmp_path: Path) -> None:
    good = {"question": "Q?", "reference": "R.", "steps": ["a", "b"], "label": 0}
    cases = [
        (dict(good, steps="a b"), "field 'steps': expected a list of step strings"),
        (dict(good, label=2), "field 'label': expected -1 or a step index below 2"),
        ({k: v for k, v in good.items() if k != "reference"}, "field 'reference'"),
    ]
    for row, message in cases:
        path = write(tmp_path / "bad.jsonl", [good, row])
        with pytest.raises(InputError, match=rf"bad\.jsonl:2: {message}"):
            load_dataset(path, steps_field="steps", first_error_field="label")
    path = write(tmp_path / "labels.jsonl", [dict(good, marks=[1])])
    with pytest.raises(InputError, match=r"labels\.jsonl:1: field 'marks': expected a list of 2"):
        load_dataset(path, steps_field="steps", step_labels_field="marks")


def test_a_process_audit_runs_on_the_users_step_labelled_file(
    traces: list[dict[str, Any]], tmp_path: Path, fault: FaultServer
) -> None:
    """The whole audit, process-prefix, on a PRM800K-layout file; the fault server's
    deterministic judge answers "Score: 4" to every prefix."""
    prm = [dict(t, ratings=ratings(t["label"], len(t["steps"]))) for t in traces]
    data = write(tmp_path / "prm.jsonl", prm)
    out = tmp_path / "report"
    code = main([
        "--data", data, "--steps-field", "steps", "--step-labels-field", "ratings",
        "--out", str(out), "--base-url", fault.url, "--model", "marks", "--no-cache",
        "--top-logprobs", "0", "--bootstrap", "20", "--probes", "2",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["mode"] == "process-prefix"
    assert report["items"] == 24
    assert report["samples"]["total"] == sum(len(t["steps"]) for t in traces)
    assert report["parse"]["failure_rate"] == 0.0


def test_a_misspelt_first_error_field_is_an_error_not_all_correct(
    traces: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "pb.jsonl", traces)
    with pytest.raises(InputError, match=r"pb\.jsonl:1: field 'lable' is missing \(the row's keys"):
        load_dataset(path, steps_field="steps", first_error_field="lable")
    code = main(["--data", path, "--steps-field", "steps", "--first-error-field", "lable",
                 "--out", str(tmp_path / "r"), "--base-url", "http://127.0.0.1:9/v1",
                 "--model", "m"])  # fmt: skip
    assert code == 2
    assert "--first-error-field" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_audit_never_saves_a_calibrator_fitted_on_too_few_units(
    tmp_path: Path, fault: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """8 units, the right ones judged low and the wrong ones high: Platt fits an
    inverted map on the 4 fit units. It is reported, and not saved."""
    rows = [{"id": f"r{i}", "group_id": f"g{i}", "question": f"Q{i}?", "reference": "R.",
             "response": f"A [[score {2 if i % 2 else 5}]]", "correct": i % 2}
            for i in range(8)]  # fmt: skip
    data = write(tmp_path / "labelled.jsonl", rows)
    out = tmp_path / "report"
    code = main(["--data", data, "--out", str(out), "--base-url", fault.url, "--model", "marks",
                 "--no-cache", "--top-logprobs", "0", "--bootstrap", "20", "--probes", "0"])  # fmt: skip
    assert code == 0
    assert "calibrator 'platt' not saved: fitted on" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert "platt" in report["calibrators_refused"]
    assert not (out / "calibrator.json").exists()
    assert not (out / "calibrators" / "platt.json").exists()
    assert "is not saved" in (out / "REPORT.md").read_text()


def test_an_inverted_platt_calibrator_is_refused_when_loaded(tmp_path: Path) -> None:
    from exprl_rewards.rewards.calibration import PlattCalibrator, load_calibrator

    path = tmp_path / "platt.json"
    PlattCalibrator(a=-39.0, b=20.0).save(path)
    with pytest.raises(InputError, match=r"slope -39\.0 is not positive"):
        load_calibrator(path)
