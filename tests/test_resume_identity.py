"""Nothing lost, nothing written twice: side files, what a resume compares, half groups.

The score CLI is run for real against the fault server's deterministic judge over
HTTP, on real files; each test fails on the code before these fixes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.cli.score import main

JUDGE = ["--model", "marks", "--no-cache", "--top-logprobs", "0", "--progress", "off",
         "--mode", "outcome"]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def row(rid: str | None, group: str, mark: str = "4", **extra: Any) -> dict[str, Any]:
    base = {"group_id": group, "question": "Q?", "reference": "R.",
            "response": f"a [[score {mark}]]", **extra}  # fmt: skip
    return base if rid is None else {"id": rid, **base}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(server: FaultServer, *args: str) -> int:
    return main([*args, "--base-url", server.url, *JUDGE])


@pytest.mark.parametrize("flag", ["--summary-json", "--errors-file"])
@pytest.mark.parametrize("target", ["output", "input", "foreign", "folder"])
def test_a_side_file_never_overwrites_what_is_not_its_own(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, target: str
) -> None:
    source = write(tmp_path / "in.jsonl", [row("r1", "g"), row("r2", "g")])
    out = tmp_path / "out.jsonl"
    assert run(server, str(source), "-o", str(out)) == 0  # 2 scored rows
    foreign = tmp_path / "config.json"
    foreign.write_text('{"learning_rate": 0.001}\n')
    (tmp_path / "folder").mkdir()
    side = {"output": out, "input": source, "foreign": foreign, "folder": tmp_path / "folder"}
    before = {p: p.read_bytes() for p in (out, source, foreign)}
    requests = server.requests
    extra = ["--on-error", "skip"] if flag == "--errors-file" else []
    code = run(server, str(source), "-o", str(out), flag, str(side[target]), *extra)
    assert code == 1
    assert flag in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    assert server.requests == requests  # refused before any judge call


def test_side_files_of_our_own_are_rewritten(server: FaultServer, tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", [row("r1", "g")])
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    assert run(server, str(source), "-o", str(out), "--summary-json", str(summary)) == 0
    assert run(server, str(source), "-o", str(out), "--summary-json", str(summary)) == 0
    assert json.loads(summary.read_text())["already_done"] == 1


def test_a_resume_with_another_field_mapping_is_refused(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "in.jsonl", [row(f"r{i}", f"g{i}") for i in range(4)])
    out = tmp_path / "out.jsonl"
    assert run(server, str(source), "-o", str(out)) == 0
    assert read(out)[0]["exprl"]["settings"]["fields"]["reference"] == "reference"
    before = out.read_bytes()
    assert run(server, str(source), "-o", str(out), "--reference-field", "question") == 1
    assert "fields" in capsys.readouterr().err
    assert out.read_bytes() == before


@pytest.mark.parametrize("spelling", ["sh", "./sh", "./sh/", "ABS"])
def test_default_ids_do_not_depend_on_how_the_folder_is_spelled(
    server: FaultServer, tmp_path: Path, spelling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "sh" / "a.jsonl", [row(None, "g1"), row(None, "g1")])
    write(tmp_path / "sh" / "b.jsonl", [row(None, "g2")])
    out = tmp_path / "out.jsonl"
    assert run(server, "sh", "-o", str(out)) == 0
    path = str(tmp_path / "sh") if spelling == "ABS" else spelling
    assert run(server, path, "-o", str(out)) == 0  # a resume: everything is done
    ids = [r["exprl"]["id"] for r in read(out)]
    assert ids == ["a.jsonl:L1", "a.jsonl:L2", "b.jsonl:L1"]


def test_a_row_changed_since_it_was_graded_is_refused(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row("r1", "g1", "2"), row("r2", "g2", "2")]
    source = write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert run(server, str(source), "-o", str(out)) == 0
    before = out.read_bytes()
    rows[1]["response"] = "now a better answer [[score 5]]"
    write(source, rows)
    assert run(server, str(source), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{source}:2" in err
    assert "'r2'" in err
    assert out.read_bytes() == before


def test_a_half_written_group_is_graded_and_written_whole_again(
    server: FaultServer, tmp_path: Path
) -> None:
    # Without a cache a judge may answer differently the second time: row c is
    # unscored on its first attempt ("I won't.") and a 4 on its second.
    c = row("c", "g1", response=f"a FAULT:refuse,ok {tmp_path.name}")
    source = write(tmp_path / "in.jsonl", [row("a", "g0"), row("b", "g0"), c, row("d", "g1", "5")])
    out = tmp_path / "out.jsonl"
    assert run(server, str(source), "-o", str(out)) == 0
    lines = out.read_text().splitlines(keepends=True)
    assert json.loads(lines[2])["exprl"]["score"] is None
    out.write_text("".join(lines[:3]) + lines[3][:30])  # killed while writing row d
    assert run(server, str(source), "-o", str(out)) == 0
    written = {r["id"]: r["exprl"] for r in read(out)}
    assert sorted(written) == ["a", "b", "c", "d"]  # each once
    # d's advantage was computed against c's new 4, so c's written score is that 4
    assert written["c"]["score"] == 0.75
    assert written["d"]["score"] == 1.0
    assert written["c"]["advantage"] < 0 < written["d"]["advantage"]


def test_a_copy_of_the_same_folder_resumes_under_any_spelling(
    server: FaultServer, tmp_path: Path
) -> None:
    write(tmp_path / "d" / "x.jsonl", [row(None, "g")])
    shutil.copytree(tmp_path / "d", tmp_path / "e")
    out = tmp_path / "out.jsonl"
    assert run(server, str(tmp_path / "d"), "-o", str(out)) == 0
    assert run(server, os.path.relpath(tmp_path / "e"), "-o", str(out)) == 0
    assert len(read(out)) == 1
