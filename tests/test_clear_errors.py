"""Mistakes and accidents get one clear line and the way out, never a traceback.

Each case runs the real command line (in-process or as a subprocess) on real files,
against the fault server's judge over HTTP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServer

from exprl_rewards.cli.score import main

DEEP = "[" * 1000 + "]" * 1000


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def rows(path: Path, n: int, response: str = "a [[score 4]]", extra: str = "") -> Path:
    path.write_text("".join(
        f'{{"id": "r{i}", "group_id": "g{i}", "question": "Q", "reference": "R",'
        f' "response": {json.dumps(response)}{extra}}}\n' for i in range(n)
    ))  # fmt: skip
    return path


def run(server: FaultServer, *args: str) -> int:
    return main([*args, "--base-url", server.url, "--model", "marks", "--no-cache",
                 "--progress", "off", "--mode", "outcome"])  # fmt: skip


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_json_nested_a_thousand_deep_is_a_bad_row(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], on_error: str
) -> None:
    source = tmp_path / "in.jsonl"
    rows(source, 2)
    with source.open("a") as f:
        f.write('{"id": "deep", "group_id": "x", "question": "Q", "reference": "R",'
                f' "response": "a", "deep": {DEEP}}}\n')  # fmt: skip
    out = tmp_path / "out.jsonl"
    code = run(server, str(source), "-o", str(out), "--on-error", on_error)
    err = capsys.readouterr().err
    assert f"{source}:3: nested too deep" in err or "skipped 1 bad input rows" in err
    if on_error == "raise":
        assert code == 2
    else:
        assert code == 0
        assert len(out.read_text().splitlines()) == 2
        (bad,) = [json.loads(x) for x in Path(f"{out}.errors.jsonl").read_text().splitlines()]
        assert (bad["line"], bad["error"][:15]) == (3, "nested too deep")


def test_a_parquet_file_with_a_bad_footer_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(b"PAR1" + b"\x00" * 64)
    assert main([str(bad), "-o", str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
                 "--model", "m"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"cannot read {bad} as Parquet" in err
    assert "Traceback" not in err


def test_ray_actors_zero_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["in.jsonl", "-o", "o.jsonl", "--ray", "--ray-actors", "0"])
    assert e.value.code == 2
    assert "--ray-actors: 0 is not at least 1" in capsys.readouterr().err


def test_a_full_disk_for_the_output_is_one_line(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rows(tmp_path / "in.jsonl", 3)
    assert run(server, str(source), "-o", "/dev/full") == 1  # every write: ENOSPC
    err = capsys.readouterr().err
    assert "cannot write /dev/full: No space left on device" in err
    assert "rerun the same command" in err


def _ctrl_c_reaches_it() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A job started in the background
    by a non-interactive shell (a CI runner's) inherits SIGINT ignored, and so would the
    command under test, which then finished its run and exited 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_run_keeps_what_was_written_and_says_how_to_resume(
    server: FaultServer, tmp_path: Path
) -> None:
    # 30 rows of 2 s each: a SIGINT sent late on a loaded machine still lands mid-run
    source = rows(tmp_path / "in.jsonl", 30, response=f"a FAULT:slow {tmp_path.name}")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "exprl_rewards.score", str(source), "-o", str(out),
         "--base-url", server.url, "--model", "marks", "--no-cache", "--progress", "off",
         "--mode", "outcome", "--batch-size", "1"],
        stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_reaches_it,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or not out.read_text()):
        time.sleep(0.1)  # the first row is written (a slow answer takes 2 s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert "rerun the same command" in err
    assert "Traceback" not in err
    assert 1 <= len(out.read_text().splitlines()) < 30


def test_a_deep_body_is_a_400_on_the_reward_server(server: FaultServer) -> None:
    import urllib.error
    import urllib.request

    from exprl_rewards.judges import OpenAIJudge
    from exprl_rewards.rewards.pipeline import RewardPipeline
    from exprl_rewards.serve import RewardServer

    judge = OpenAIJudge("marks", base_url=server.url)
    with RewardServer(RewardPipeline(judge, mode="outcome"), port=0) as rs:
        data = ('{"query": ["q"], "prompts": ["p"], "labels": ' + DEEP + "}").encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(rs.url + "/get_reward", data=data),
                                   timeout=30)  # fmt: skip
    assert e.value.code == 400
    assert "nested too deep" in json.loads(e.value.read())["error"]


def test_a_trl_style_row_is_told_which_mapping_flags_to_pass(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """prompt/completion/solution rows: the error lists the row's keys and the flag."""
    source = tmp_path / "trl.jsonl"
    source.write_text(json.dumps({"prompt": "2+2?", "completion": "4", "solution": "4"}) + "\n")
    assert run(server, str(source), "-o", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert "the row's keys: completion, prompt, solution" in err
    assert "pass --question-field prompt if it holds the question" in err


@pytest.mark.parametrize("indent", [2, None], ids=["pretty", "one-line"])
def test_a_json_array_is_named_as_one_not_a_bad_line_each(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], indent: int | None
) -> None:
    source = tmp_path / "rows.jsonl"
    items = [{"question": "Q", "reference": "R", "response": f"a{i}"} for i in range(3)]
    source.write_text(json.dumps(items, indent=indent))
    before = server.requests
    assert run(server, str(source), "-o", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert "a JSON array of 3 items, not JSON Lines" in err
    assert "jq -c '.[]'" in err
    assert "not valid JSON" not in err
    assert server.requests == before
    assert not (tmp_path / "out.jsonl").exists()


def test_an_unknown_template_suggests_the_close_built_ins(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rows(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out.jsonl"
    assert run(server, str(source), "-o", str(out), "--template", "outcome-scoreonly") == 1
    err = capsys.readouterr().err
    assert "template 'outcome-scoreonly' is neither a built-in nor a file" in err
    assert "did you mean 'outcome-score-only'" in err
    assert "process-tagged" in err  # the full list
    assert not out.exists()
