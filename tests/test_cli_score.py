"""``python -m exprl_rewards.score``: bad input, field mapping, resume, and the real judge.

Fast tests use the deterministic judge of the fault server over real HTTP; the
end-to-end tests grade the shipped examples with the embedded default judge
(SmolLM2-135M-Instruct on vLLM in-process), including a kill -9 and a resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.cli.score import main
from exprl_rewards.judges.templates import get_template

from conftest import ROOT

EXAMPLES = ROOT / "examples" / "rollouts.jsonl"


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def row(rid: str, group: str = "g", mark: str = "4", **extra: Any) -> dict[str, Any]:
    base = {
        "id": rid,
        "group_id": group,
        "question": "Q?",
        "reference": "R.",
        "response": f"a [[score {mark}]]",
    }
    base.update(extra)
    return base


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


JUDGE = ["--model", "marks", "--no-cache", "--top-logprobs", "0", "--progress", "off"]


def run(server: FaultServer, *args: str) -> int:
    return main([*args, "--base-url", server.url, *JUDGE, "--mode", "outcome"])


def test_bad_input_is_reported_by_file_line_and_field_before_any_judge_call(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(
        tmp_path / "in.jsonl",
        [
            row("r1"),
            '{"id": "r2", "question": ',
            {k: v for k, v in row("r3").items() if k != "reference"},
            row("r4", response=7),
            row("r1"),
            row("r6", token_offsets=[[0, 2], [1, 99]]),
            "[1, 2]",
        ],
    )
    before = server.requests
    assert run(server, str(source), "-o", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert f"{source}:2: not valid JSON" in err
    assert f"{source}:3: field 'reference': missing" in err
    assert f"{source}:4: field 'response': Input should be a valid string" in err
    assert f"{source}:5: field 'id': duplicate id 'r1' (first on line 1)" in err
    assert f"{source}:6: field 'token_offsets': rollout 'r6': token_offsets[1] = (1, 99)" in err
    assert f"{source}:7: a row must be a JSON object, got list" in err
    assert "6 bad input rows; nothing was graded" in err
    assert server.requests == before
    assert not (tmp_path / "out.jsonl").exists()


def test_skip_writes_bad_rows_to_a_side_file_and_grades_the_rest(
    server: FaultServer, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.jsonl", [row("r1"), "not json", row("r3", mark="2")])
    out = tmp_path / "out.jsonl"
    assert (
        run(
            server,
            str(source),
            "-o",
            str(out),
            "--on-error",
            "skip",
            "--summary-json",
            str(tmp_path / "s.json"),
        )
        == 0
    )
    assert [r["exprl"]["score"] for r in read(out)] == [0.75, 0.25]
    (bad,) = read(Path(f"{out}.errors.jsonl"))
    assert (bad["line"], bad["row"]) == (2, "not json")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["rows"], summary["scored"], summary["bad_rows_skipped"]) == (3, 2, 1)


def test_verl_style_rows_by_dotted_paths(server: FaultServer, tmp_path: Path) -> None:
    verl = {
        "data_source": "gsm8k",
        "prompt": [{"role": "user", "content": "Q?"}],
        "response": "x [[score 5]]",
        "extra_info": {"index": 7, "question": "Q?", "solution": "R."},
    }
    source = write(tmp_path / "verl.jsonl", [verl])
    out = tmp_path / "out.jsonl"
    fields = [
        "--id-field",
        "extra_info.index",
        "--question-field",
        "extra_info.question",
        "--reference-field",
        "extra_info.solution",
    ]
    assert run(server, str(source), "-o", str(out), *fields) == 0
    (got,) = read(out)
    assert got["extra_info"] == verl["extra_info"]  # the input row is kept as it was
    assert (got["exprl"]["id"], got["exprl"]["score"]) == ("7", 1.0)


def test_trl_style_conversational_rows_through_stdin_and_stdout(server: FaultServer) -> None:
    trl = {
        "prompt": [{"role": "user", "content": "Q?"}],
        "completion": [{"role": "assistant", "content": "y [[score 3]]"}],
        "solution": "R.",
    }
    args = ["-m", "exprl_rewards.score", "-", "-o", "-", "--base-url", server.url, *JUDGE]
    args += ["--mode", "outcome", "--question-field", "prompt.0.content"]
    args += ["--response-field", "completion.0.content", "--reference-field", "solution"]
    done = subprocess.run(
        [sys.executable, *args],
        input=json.dumps(trl) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    (got,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert got["exprl"]["score"] == 0.5
    assert got["exprl"]["id"] == "L1"  # no id field: the line number
    assert "scored 1, unscored 0" in done.stderr


def test_resume_skips_written_rows_and_repairs_a_cut_line(
    server: FaultServer, tmp_path: Path
) -> None:
    rows = [row(f"r{i}", group=f"g{i // 2}", mark=str(i % 5 + 1)) for i in range(6)]
    source = write(tmp_path / "in.jsonl", rows)
    full = tmp_path / "full.jsonl"
    assert run(server, str(source), "-o", str(full), "--batch-size", "2") == 0
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:3]) + lines[3][:25])  # died writing row 4, mid-group g1
    assert run(server, str(source), "-o", str(partial), "--batch-size", "2") == 0
    resumed = read(partial)
    assert sorted(r["id"] for r in resumed) == [f"r{i}" for i in range(6)]
    by_id = {r["id"]: r["exprl"] for r in read(full)}
    for r in resumed:  # r3's group was graded again whole, so its advantage is the full group's
        assert r["exprl"]["score"] == by_id[r["id"]]["score"]
        assert r["exprl"]["advantage"] == by_id[r["id"]]["advantage"]


def test_missing_file_and_bad_template(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(server, str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl")) == 2
    assert "cannot read" in capsys.readouterr().err
    source = write(tmp_path / "in.jsonl", [row("r1")])
    assert (
        run(
            server,
            str(source),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--template",
            str(tmp_path / "missing.jsonl"),
        )
        == 1
    )
    assert "is neither a built-in nor a file; " in capsys.readouterr().err


# With the embedded default judge ----------------------------------------------------


def embedded(*args: str) -> list[str]:
    return [sys.executable, "-m", "exprl_rewards.score", *args, "--progress", "off"]


def test_examples_outcome_with_the_embedded_judge(tmp_path: Path) -> None:
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    args = [str(EXAMPLES), "-o", str(out), "--mode", "outcome", "--template", "outcome-score-only"]
    assert (
        main(
            [
                *args,
                "--cache",
                str(tmp_path / "c.sqlite"),
                "--summary-json",
                str(summary),
                "--progress",
                "off",
            ]
        )
        == 0
    )
    rows = read(out)
    assert len(rows) == 36
    assert [r["id"] for r in rows] == [
        json.loads(line)["id"] for line in EXAMPLES.read_text().splitlines()
    ]
    s = json.loads(summary.read_text())
    assert s["rows"] == 36
    assert s["scored"] + s["unscored"] == 36
    for r in rows:
        e = r["exprl"]
        assert (e["score"] is None) == (e["reason"] is not None)
        if e["score"] is not None:
            assert 0.0 <= e["score"] <= 1.0
            assert 1.0 <= e["raw"] <= 5.0
        assert e["judge"]["prompt_tokens"] > 200


def test_process_modes_on_examples_with_the_embedded_judge(tmp_path: Path) -> None:
    first8 = write(tmp_path / "in.jsonl", EXAMPLES.read_text().splitlines()[:8])
    out = tmp_path / "out.jsonl"
    args = [
        str(first8),
        "-o",
        str(out),
        "--mode",
        "process-segment",
        "--template",
        "process-segment-score-only",
    ]
    assert (
        main(
            [
                *args,
                "--slicer",
                "newline",
                "--cache",
                str(tmp_path / "c.sqlite"),
                "--progress",
                "off",
            ]
        )
        == 0
    )
    rows = read(out)
    assert len(rows) == 8
    for r in rows:
        segments = r["exprl"]["segments"]
        assert len(segments) == len([line for line in r["response"].split("\n") if line.strip()])
        assert r["response"][segments[0]["start"] : segments[-1]["end"]] == r["response"]
        if r["exprl"]["score"] is not None:
            assert (
                abs(sum(s["advantage"] for s in segments)) < 1e-9 or len(segments) == 1
            )  # DeltaNorm


def test_kill_nine_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", EXAMPLES.read_text().splitlines()[:12])
    cache = str(tmp_path / "c.sqlite")
    common = [
        "--mode",
        "process-prefix",
        "--template",
        "process-prefix-score-only",
        "--slicer",
        "newline",
    ]
    common += ["--batch-size", "4", "--cache", cache]
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        embedded(str(source), "-o", str(out), *common),
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 4:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    written = out.read_text().count("\n")
    assert 4 <= written < 12
    subprocess.run(embedded(str(source), "-o", str(out), *common), check=True, capture_output=True)
    resumed = read(out)
    ids = [r["id"] for r in resumed]
    assert sorted(ids) == sorted(json.loads(line)["id"] for line in source.read_text().splitlines())
    assert len(ids) == len(set(ids)) == 12
    again = tmp_path / "again.jsonl"
    subprocess.run(
        embedded(str(source), "-o", str(again), *common), check=True, capture_output=True
    )
    uninterrupted = {r["id"]: r["exprl"] for r in read(again)}
    for r in resumed:  # with the cache, bit-identical
        assert [s["score"] for s in r["exprl"]["segments"]] == [
            s["score"] for s in uninterrupted[r["id"]]["segments"]
        ]
        assert [s["advantage"] for s in r["exprl"]["segments"]] == [
            s["advantage"] for s in uninterrupted[r["id"]]["segments"]
        ]
    assert all(e["judge"]["calls"] == 0 for e in uninterrupted.values())  # all from the cache


def test_progress_bar_when_asked(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "in.jsonl", [row(f"r{i}", group=f"g{i}") for i in range(3)])
    args = [
        str(source),
        "-o",
        str(tmp_path / "o.jsonl"),
        "--base-url",
        server.url,
        "--model",
        "m",
        "--no-cache",
    ]
    assert main([*args, "--mode", "outcome", "--progress", "on", "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "3/3" in err
    assert "rollout/s" in err


def test_the_engines_own_output_goes_to_a_log_unless_verbose(tmp_path: Path) -> None:
    """The main job shows our summary only; vLLM's and torch's output go to a log file
    named in the summary, or to the terminal with --verbose."""
    first4 = write(tmp_path / "in.jsonl", EXAMPLES.read_text().splitlines()[:4])
    args = ["--mode", "outcome", "--template", "outcome-score-only", "--no-cache"]
    quiet = subprocess.run(embedded(str(first4), "-o", str(tmp_path / "a.jsonl"), *args),
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    lines = quiet.stderr.splitlines()
    assert lines[0].startswith("exprl-rewards: 4 rows")
    assert all(line.startswith(("exprl-rewards:", "  ")) for line in lines), lines
    log = Path(lines[-1].rsplit(": ", 1)[1])
    assert "engine log" in lines[-1]
    assert "WARNING" in log.read_text()  # vLLM's start-up notices, kept, out of the way
    loud = subprocess.run(
        embedded(str(first4), "-o", str(tmp_path / "b.jsonl"), *args, "--verbose"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert loud.returncode == 0
    assert "WARNING" in loud.stdout + loud.stderr  # vLLM logs to stdout
    assert "engine log" not in loud.stderr


def test_a_custom_score_only_template_reads_a_bare_number(
    server: FaultServer, tmp_path: Path
) -> None:
    """--score-only marks a custom file score-only: a bare "4" is then the judge's score."""
    template = tmp_path / "mine.jinja"
    template.write_text("Grade {{ fence(response, 'R') }} against {{ fence(reference, 'REF') }}.")
    source = write(tmp_path / "in.jsonl", [row("r1", response="FAULT:lowmass")])
    scores = {}
    for flag in ([], ["--score-only"]):
        out = tmp_path / f"out{len(flag)}.jsonl"
        args = [str(source), "-o", str(out), "--template", str(template), "--no-prefill", *flag]
        assert run(server, *args) == 0
        scores[bool(flag)] = read(out)[0]["exprl"]["score"]
    assert scores == {False: None, True: 0.75}


def test_route_released_grades_each_domain_with_its_pipeline(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = "Let x = 2. [[score 3]] ### So x + 1 = 3. [[score 5]]"
    rows = [
        row("m1", "gm", response=steps, ability="math"),
        row("m2", "gm", mark="1", ability="math"),
        row("c1", "gc", mark="5", ability="code"),
        row("c2", "gc", mark="1", ability="code"),
        row("s1", "gs", mark="4", ability="science", extra_info={"answerKey": "B"}),
        row("o1", "go", mark="2", ability="Logic "),  # unknown: the released fallback
    ]
    source, out = write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    judge = ["--base-url", server.url, *JUDGE]
    assert main([str(source), "-o", str(out), "--route", "released", *judge]) == 0
    got = {r["id"]: r["exprl"] for r in read(out)}
    assert [r["id"] for r in read(out)] == [r["id"] for r in rows]
    templates = {t: get_template(t).id for t in ("process-segment", "code-outcome", "outcome")}
    routes = {k: (e["route"], e["mode"], e["judge"]["template"]) for k, e in got.items()}
    assert routes == {
        "m1": ("math", "process-segment", templates["process-segment"]),
        "m2": ("math", "process-segment", templates["process-segment"]),
        "c1": ("code", "outcome", templates["code-outcome"]),
        "c2": ("code", "outcome", templates["code-outcome"]),
        "s1": ("science-mcq", "process-segment", templates["process-segment"]),
        "o1": ("other", "outcome", templates["outcome"]),
    }
    assert len(got["m1"]["segments"]) == 2  # '###' steps
    assert got["c1"]["advantage"] > 0 > got["c2"]["advantage"]  # GRPO within the code group
    settings = got["o1"]["settings"]
    assert settings["route"] == "released"
    assert settings["routes"]["code"]["template"] == templates["code-outcome"]
    assert settings["routes"]["math"]["slicer"] == "exprl"

    split = write(tmp_path / "split.jsonl", [row("a", "g", ability="math"),
                                            row("b", "g", ability="code"), row("c", "h", ability="x")])  # fmt: skip
    before = server.requests
    assert main([str(split), "-o", str(tmp_path / "x.jsonl"), "--route", "released", *judge]) == 2
    err = capsys.readouterr().err
    assert f"{split}:2: field 'ability': group 'g' takes routes 'math' ({split}:1), 'code'" in err
    assert "2 bad input rows; nothing was graded" in err
    assert server.requests == before
    assert main([str(source), "-o", str(tmp_path / "y.jsonl"), "--route", "released",
                 "--mode", "outcome", *judge]) == 1  # fmt: skip
    assert (
        "--route released picks each row's mode and template; drop --mode"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("ability", "extra", "message"),
    [
        (None, None, "ability is missing"),
        (["math"], None, "ability ['math'] is not a string"),
        ("math/algebra", None, "'math/algebra' names a domain but is not one of math"),
        ("Mathematics", None, "names a domain"),
        ("science", "not json", "extra_info is not an object"),
    ],
)
def test_route_released_refuses_a_domain_it_would_silently_misroute(
    server: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ability: Any,
    extra: Any,
    message: str,
) -> None:
    fields: dict[str, Any] = {} if ability is None else {"ability": ability}
    if extra is not None:
        fields["extra_info"] = extra
    source = write(tmp_path / "in.jsonl", [row("a", "g", **fields), row("b", "g", **fields)])
    before = server.requests
    code = main([str(source), "-o", str(tmp_path / "o.jsonl"), "--route", "released",
                 "--base-url", server.url, *JUDGE])  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err
    assert server.requests == before


def test_route_released_normalises_case_spaces_and_json_extra_info(
    server: FaultServer, tmp_path: Path
) -> None:
    rows = [row("m", "gm", ability=" Math"),
            row("s", "gs", ability="SCIENCE", extra_info=json.dumps({"choices": ["A", "B"]}))]  # fmt: skip
    out = tmp_path / "o.jsonl"
    assert main([str(write(tmp_path / "in.jsonl", rows)), "-o", str(out), "--route", "released",
                 "--base-url", server.url, *JUDGE]) == 0  # fmt: skip
    assert [r["exprl"]["route"] for r in read(out)] == ["math", "science-mcq"]


def test_route_released_refuses_a_slicer(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "in.jsonl", [row("m", "g", ability="math")])
    assert main([str(source), "-o", str(tmp_path / "o.jsonl"), "--route", "released",
                 "--slicer", "newline", "--base-url", server.url, *JUDGE]) == 1  # fmt: skip
    assert "drop --slicer" in capsys.readouterr().err


def test_the_defaults_work_together_with_the_embedded_judge(tmp_path: Path) -> None:
    """No --mode, no --template: the embedded judge gets the default mode's score-only
    template, so rows are scored (its reasoning template left every row 'no score line')."""
    first4 = write(tmp_path / "in.jsonl", EXAMPLES.read_text().splitlines()[:4])
    out = tmp_path / "out.jsonl"
    assert main([str(first4), "-o", str(out), "--cache", str(tmp_path / "c.sqlite"),
                 "--progress", "off"]) == 0  # fmt: skip
    rows = read(out)
    settings = rows[0]["exprl"]["settings"]
    assert settings["mode"] == "outcome"  # the default of score, serve and the adapters
    assert settings["template"] == get_template("outcome-score-only").id
    reasons = [r["exprl"]["reason"] for r in rows]
    assert not any(r and "no score line" in r for r in reasons)
    assert sum(r["exprl"]["score"] is not None for r in rows) >= 3


def test_score_file_is_the_typed_core_with_the_clis_guarantees(
    server: FaultServer, tmp_path: Path
) -> None:
    from exprl_rewards import ConfigError, InputError, JudgeUnavailable, score_file

    source = write(tmp_path / "in.jsonl", [row("r1"), row("r2", mark="2")])
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    judge = {"base_url": [server.url], "model": "marks", "no_cache": True, "mode": "outcome"}
    got = score_file(source, out, summary_json=summary, progress="off", **judge)
    assert json.loads(summary.read_text()) == got  # written, not silently ignored
    assert got["scored"] == 2
    with pytest.raises(ConfigError, match="unknown option 'base_ulr'; did you mean base_url"):
        score_file(source, out, base_ulr=[server.url])
    with pytest.raises(ConfigError, match=r"no_cache= \(--no-cache\) is a flag"):
        score_file(source, out, no_cache="yes")
    with pytest.raises(ConfigError, match=r"batch_size.*is not at least 1"):
        score_file(source, out, batch_size=0)
    bad = write(tmp_path / "bad.jsonl", [row("r1"), {"id": "r2"}])
    with pytest.raises(InputError) as e:
        score_file(bad, tmp_path / "o2.jsonl", **judge)
    assert [(x.line, x.field) for x in e.value.errors] == [(2, "question")]  # type: ignore[attr-defined]
    with pytest.raises(JudgeUnavailable, match="cannot be reached"):
        score_file(source, tmp_path / "o3.jsonl", base_url=["http://127.0.0.1:9/v1"],
                   model="m")  # fmt: skip
    assert not (tmp_path / "o3.jsonl").exists()
