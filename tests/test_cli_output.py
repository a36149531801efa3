"""``python -m exprl_rewards.score``: nothing lost, nothing written twice, no file not ours
touched. Real files, real processes, and the fault server's judge over real HTTP."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.cli.score import main


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def row(rid: str, group: str = "g", mark: str = "4", **extra: Any) -> dict[str, Any]:
    base = {"id": rid, "group_id": group, "question": "Q?", "reference": "R."}
    base["response"] = f"a [[score {mark}]]"
    base.update(extra)
    return base


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def judge_args(server: FaultServer) -> list[str]:
    return ["--base-url", server.url, "--model", "marks", "--no-cache", "--top-logprobs", "0"]


def run(server: FaultServer, *args: str) -> int:
    return main([*args, *judge_args(server), "--mode", "outcome", "--progress", "off"])


def command(server: FaultServer, *args: str) -> list[str]:
    return [sys.executable, "-m", "exprl_rewards.score", *args, *judge_args(server),
            "--mode", "outcome", "--progress", "off"]  # fmt: skip


# Files that are not ours --------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"learning_rate": 0.001, "epochs": 3}',  # a JSON config with no final newline
        b'{"id": "x", "other_tool": 1}\n{"id": "y"}',  # another tool's JSONL
        b"name,score\nr1,4\n",  # a CSV
    ],
)
def test_an_output_that_is_not_ours_is_refused_and_left_byte_for_byte(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    source = write_rows(tmp_path / "in.jsonl", [row("r1")])
    target = tmp_path / "config.json"
    target.write_bytes(content)
    before = server.requests
    assert run(server, str(source), "-o", str(target)) == 1
    assert target.read_bytes() == content
    assert "not this tool's output" in capsys.readouterr().err
    assert server.requests == before


def test_the_input_file_is_never_the_output(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(row("r1")))  # no final newline: resume used to cut it
    content = source.read_bytes()
    assert run(server, str(source), "-o", str(source)) == 1
    assert source.read_bytes() == content
    assert "is the input file" in capsys.readouterr().err


def test_a_cut_row_of_ours_is_repaired_but_a_first_line_alone_is_not(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_rows(tmp_path / "in.jsonl", [row("r1", group="a"), row("r2", group="b")])
    out = tmp_path / "out.jsonl"
    assert run(server, str(source), "-o", str(out)) == 0
    first = out.read_text().splitlines()[0]
    out.write_text(first + "\n" + first[:40])  # killed while writing the second row
    assert run(server, str(source), "-o", str(out)) == 0
    assert [r["id"] for r in read(out)] == ["r1", "r2"]
    lone = tmp_path / "lone.jsonl"
    lone.write_text(first[:40])  # nothing proves this fragment is ours
    assert run(server, str(source), "-o", str(lone)) == 1
    assert lone.read_text() == first[:40]
    assert "a last line with no newline" in capsys.readouterr().err


# One writer, one kind of score ----------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row(f"r{i}", group=f"g{i}", response=f"FAULT:slow,ok {i}") for i in range(4)]
    source = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    first = subprocess.Popen(
        command(server, str(source), "-o", str(out), "--batch-size", "1", "--timeout", "5"),
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    held = False
    with out.open("a") as probe:  # wait until the first run holds its lock
        while time.monotonic() < deadline and first.poll() is None:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
            except BlockingIOError:
                held = True
                break
            time.sleep(0.02)
    assert held, "the first run never held the output's lock"
    assert run(server, str(source), "-o", str(out)) == 1
    assert "being written by another run" in capsys.readouterr().err
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    ids = [r["id"] for r in read(out)]
    assert sorted(ids) == ["r0", "r1", "r2", "r3"]  # each row once


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        (["--template", "outcome-score-only"], "template"),
        (["--min-mass", "0.9"], "min_mass"),
        (["--estimator", "rloo"], "estimator"),
        (["--order", "released"], "order"),
    ],
)
def test_resuming_with_other_settings_is_refused(
    server: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: list[str],
    setting: str,
) -> None:
    source = write_rows(tmp_path / "in.jsonl", [row("r1", group="a"), row("r2", group="b")])
    out = tmp_path / "out.jsonl"
    write_rows(source, [row("r1", group="a")])
    assert run(server, str(source), "-o", str(out)) == 0
    content = out.read_bytes()
    write_rows(source, [row("r1", group="a"), row("r2", group="b")])
    assert run(server, str(source), "-o", str(out), *change) == 1
    err = capsys.readouterr().err
    assert "written with other settings" in err
    assert f"{setting}:" in err
    assert out.read_bytes() == content
    assert run(server, str(source), "-o", str(out)) == 0  # the same settings resume
    assert [r["id"] for r in read(out)] == ["r1", "r2"]


def test_every_row_records_its_settings_and_digit_mass(server: FaultServer, tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.jsonl", [row("r1"), row("r2", mark="2")])
    out = tmp_path / "out.jsonl"
    assert main([str(source), "-o", str(out), "--base-url", server.url, "--model", "marks",
                 "--no-cache", "--mode", "outcome", "--progress", "off"]) == 0  # fmt: skip
    for r in read(out):
        e = r["exprl"]
        assert e["mass"] == pytest.approx(0.9655, abs=1e-3)  # logprobs on by default
        assert e["settings"]["min_mass"] == 0.5
        assert e["settings"]["mode"] == "outcome"
        assert e["settings"]["judge"] == "openai:marks"


# Input that cannot be encoded -----------------------------------------------------------


BAD_LINES = [
    json.dumps(row("ok1", group="a")).encode(),
    b'{"id": "sur", "question": "Q?", "reference": "R.", "response": "x \\ud800 y"}',
    json.dumps(row("bytes", group="b")).encode().replace(b"a [[", b"a \xff\xfe [["),
    b'{"id": "nan", "question": "Q?", "reference": "R.", "response": "x", "w": NaN}',
    b'{"id": "cr",\r "question": "Q?", "reference": "R.", "response": "a [[score 3]]"}',
    json.dumps(row("ok2", group="c", meta={"note": "\ud800"})).encode(),
]


def test_text_that_cannot_be_encoded_is_a_bad_row_before_any_judge_call(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(BAD_LINES) + b"\n")
    before = server.requests
    assert run(server, str(source), "-o", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert server.requests == before
    assert f"{source}:2: field 'response': has a lone surrogate" in err
    assert f"{source}:3: not UTF-8 text (byte 0xff at column" in err
    assert f"{source}:4: not valid JSON: NaN is not a JSON number" in err
    assert f"{source}:6: field 'meta.note': has a lone surrogate" in err
    assert ":5:" not in err  # a lone CR is whitespace inside one row, not a line break
    out = tmp_path / "skip.jsonl"
    assert run(server, str(source), "-o", str(out), "--on-error", "skip") == 0
    assert [r["id"] for r in read(out)] == ["ok1", "cr"]
    side = [json.loads(line) for line in Path(f"{out}.errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["field"]) for e in side] == [
        (2, "response"), (3, None), (4, None), (6, "meta.note")
    ]  # fmt: skip


def test_invalid_bytes_on_stdin_are_reported_on_their_line(
    server: FaultServer, tmp_path: Path
) -> None:
    data = b"\n".join(BAD_LINES[:3]) + b"\n"
    done = subprocess.run(command(server, "-", "-o", str(tmp_path / "o.jsonl")), input=data,
                          capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert b"-:3: not UTF-8 text" in done.stderr
    assert b"Traceback" not in done.stderr


def test_an_output_field_that_would_overwrite_an_input_column_is_a_bad_row(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_rows(tmp_path / "in.jsonl", [row("r1", exprl={"mine": 1}), row("r2")])
    assert run(server, str(source), "-o", str(tmp_path / "o.jsonl")) == 2
    assert f"{source}:1: field 'exprl': results are written to this field" in (
        capsys.readouterr().err
    )
    out = tmp_path / "o2.jsonl"
    assert run(server, str(source), "-o", str(out), "--output-field", "grade") == 0
    assert read(out)[0]["exprl"] == {"mine": 1}
    assert read(out)[0]["grade"]["id"] == "r1"


# Paths and caches -----------------------------------------------------------------------


def test_outputs_into_missing_folders_and_to_a_pipe(server: FaultServer, tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.jsonl", [row("r1")])
    out, summary = tmp_path / "a" / "b" / "out.jsonl", tmp_path / "c" / "summary.json"
    assert run(server, str(source), "-o", str(out), "--summary-json", str(summary)) == 0
    assert read(out)[0]["exprl"]["score"] == 0.75
    assert json.loads(summary.read_text())["scored"] == 1
    piped = subprocess.run(command(server, str(source), "-o", "/dev/stdout"),
                           capture_output=True, timeout=120)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["exprl"]["score"] == 0.75


def test_a_corrupt_judge_cache_is_a_clear_error(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_rows(tmp_path / "in.jsonl", [row("r1")])
    cache = tmp_path / "judge.sqlite"
    cache.write_bytes(b"this is not a database, it only has the name of one" * 100)
    args = [str(source), "-o", str(tmp_path / "o.jsonl"), "--base-url", server.url,
            "--model", "marks", "--mode", "outcome", "--progress", "off", "--cache", str(cache)]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"cannot use the judge cache {cache}" in err
    assert "--no-cache" in err
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""
    assert main([*args, "--no-cache"]) == 0


def test_a_cache_that_fails_mid_run_is_turned_off_and_the_run_goes_on(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exprl_rewards.judges import JudgeCache, JudgeRequest, OpenAIJudge, judge_sync

    cache = JudgeCache(tmp_path / "judge.sqlite")
    with sqlite3.connect(tmp_path / "judge.sqlite") as db:
        db.execute("DROP TABLE judgements")  # the file breaks under the open cache
    judge = OpenAIJudge("marks", base_url=server.url, cache=cache, timeout=5)
    requests = [JudgeRequest(messages=({"role": "user", "content": f"[[score 3]] {i}"},))
                for i in range(2)]  # fmt: skip
    assert [r.score for r in judge_sync(judge, requests)] == [3.0, 3.0]
    assert cache.disabled is not None
    assert "no such table" in cache.disabled
