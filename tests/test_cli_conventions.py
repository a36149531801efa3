"""The commands follow the field's conventions (issue 28): every default in ``--help``,
"did you mean" for a mistyped flag or name, one default mode, the judge from
``EXPRL_JUDGE_*`` as the adapters take it, progress row by row, and nothing left
behind by a run refused at start-up. Each runs the real command line; the judge is the
fault server over HTTP.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.cli import audit as audit_cli
from exprl_rewards.cli.parser import ExpRLParser
from exprl_rewards.cli.score import main as score
from exprl_rewards.cli.score_args import score_parser
from exprl_rewards.cli.summary import Progress
from exprl_rewards.judges.templates import DEFAULT_MODE


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def rows(path: Path, responses: list[str]) -> Path:
    path.write_text("".join(
        json.dumps({"id": f"r{i}", "group_id": "g", "question": "Q", "reference": "R",
                    "response": r}) + "\n" for i, r in enumerate(responses)
    ))  # fmt: skip
    return path


def parser_of(main: Callable[[list[str]], Any], monkeypatch: pytest.MonkeyPatch) -> ExpRLParser:
    """The parser a command's ``main`` builds, caught as it parses."""
    caught: list[ExpRLParser] = []

    def catch(self: ExpRLParser, *args: Any, **kwargs: Any) -> Any:
        caught.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(ExpRLParser, "parse_known_args", catch)
    with pytest.raises(SystemExit):
        main(["x"])
    monkeypatch.undo()
    return caught[0]


def _mains() -> dict[str, Callable[[list[str]], Any]]:
    from exprl_rewards import serve, verify
    from exprl_rewards.demo.__main__ import main as demo
    from exprl_rewards.train.__main__ import main as train

    return {"score": score, "audit": audit_cli.main, "serve": serve.main, "verify": verify.main,
            "demo": demo, "train": train}  # fmt: skip


@pytest.mark.parametrize("command", ["score", "audit", "serve", "verify", "demo", "train"])
def test_every_option_with_a_default_shows_it_in_help(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = parser_of(_mains()[command], monkeypatch)
    formatter = parser._get_formatter()
    missing = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        if action.default in (None, False, argparse.SUPPRESS, []):
            continue
        if isinstance(action, argparse._VersionAction):
            continue
        text = formatter._format_action(action)
        if "default" not in text.lower():
            missing.append(action.option_strings[-1])
    assert not missing, f"{command}: no default in --help for {missing}"


def test_a_mistyped_flag_gets_the_closest_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        score(["in.jsonl", "-o", "out.jsonl", "--concurency", "4"])
    assert exit_.value.code == 2
    assert "--concurency (did you mean --concurrency?)" in capsys.readouterr().err


def test_a_mistyped_choice_gets_the_closest_one(capsys: pytest.CaptureFixture[str]) -> None:
    from exprl_rewards import serve

    with pytest.raises(SystemExit):
        serve.main(["--slicer", "newlin"])
    assert "(did you mean newline?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        score(["in.jsonl", "-o", "out.jsonl", "--mode", "outcom"])
    assert "(did you mean outcome?)" in capsys.readouterr().err


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_bad_estimator_is_refused_before_anything_is_written(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], on_error: str
) -> None:
    source = rows(tmp_path / "in.jsonl", ["a [[score 4]]", "b [[score 2]]"])
    with source.open("a") as f:
        f.write("not json\n")  # a bad row: --on-error skip would write it aside
    out = tmp_path / "out.jsonl"
    code = score([str(source), "-o", str(out), "--base-url", server.url, "--model", "marks",
                  "--estimator", "grop", "--on-error", on_error, "--no-cache"])  # fmt: skip
    err = capsys.readouterr().err
    if on_error == "raise":
        assert code == 2  # the bad row is found first
    else:
        assert code == 1
        assert "unknown outcome estimator 'grop'; did you mean 'grpo'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # nothing left behind


def test_one_default_mode_for_score_serve_and_the_adapters(server: FaultServer) -> None:
    from exprl_rewards.adapters.environ import environment_reward
    from exprl_rewards.cli.build import build_pipeline
    from exprl_rewards.serve import _parser as serve_parser

    args = score_parser().parse_args(["x", "-o", "y", "--base-url", server.url, "--model", "m"])
    assert build_pipeline(args).mode == DEFAULT_MODE == "outcome"
    assert serve_parser().parse_args([]).mode == DEFAULT_MODE
    assert audit_cli._parser().parse_args(["--data", "x", "-o", "y"]).mode is None  # by labels
    reward = environment_reward(base_url=server.url, model="m")
    assert reward.pipeline.mode == DEFAULT_MODE


def test_the_judge_comes_from_the_environment_as_for_the_adapters(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRL_JUDGE_BASE_URL", server.url)
    monkeypatch.setenv("EXPRL_JUDGE_MODEL", "marks")
    monkeypatch.setenv("EXPRL_JUDGE_API_KEY", "sk-from-env")
    source = rows(tmp_path / "in.jsonl", ["a [[score 5]]", "b [[score 1]]"])
    out = tmp_path / "out.jsonl"
    before = len(server.bodies)
    assert score([str(source), "-o", str(out), "--no-cache", "--progress", "off",
                  "--top-logprobs", "0"]) == 0  # fmt: skip
    scores = [json.loads(line)["exprl"]["score"] for line in out.read_text().splitlines()]
    assert scores == [1.0, 0.0]
    assert set(server.authorizations[before:]) == {"Bearer sk-from-env"}
    # a flag replaces the environment's server instead of adding a replica to it
    args = score_parser().parse_args(["x", "-o", "y", "--base-url", "http://127.0.0.1:1/v1"])
    assert args.base_url == ["http://127.0.0.1:1/v1"]
    assert score_parser().parse_args(["x", "-o", "y"]).base_url == [server.url]


def test_progress_lines_move_within_a_batch() -> None:
    stream = io.StringIO()
    progress = Progress(4, "lines", stream=stream, interval=0.0)
    progress.start_batch(4)
    progress.asked(8)  # a process batch: two requests a row
    for _ in range(4):
        progress.answered(1)
    progress.update(4)
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "progress: 0/4 rollouts", "progress: 1/4 rollouts", "progress: 2/4 rollouts",
        "progress: 4/4 rollouts",
    ]  # fmt: skip
    assert "s left" in lines[-1]


def test_the_score_command_shows_progress_per_judge_answer(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # each request takes 2 s, one at a time: one batch of 3 rows, lines while it runs
    source = rows(tmp_path / "in.jsonl", [f"FAULT:slow {i}" for i in range(3)])
    out = tmp_path / "out.jsonl"
    code = score([str(source), "-o", str(out), "--base-url", server.url, "--model", "marks",
                  "--no-cache", "--concurrency", "1", "--progress", "lines",
                  "--no-judge-check", "--top-logprobs", "0"])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "progress: 1/3 rollouts" in err  # before the batch was written
    assert "progress: 2/3 rollouts" in err
    assert f"wrote {out}" in err  # the summary names the output
    assert "next:" in err


def test_progress_reaches_the_terminal_while_the_engine_output_goes_to_its_log(
    tmp_path: Path,
) -> None:
    from exprl_rewards.judges.logs import engine_output

    terminal, log = tmp_path / "terminal.txt", tmp_path / "engine.log"
    with terminal.open("w") as stream:
        progress = Progress(2, "lines", stream=stream, interval=0.0)  # type: ignore[arg-type]
        progress.start_batch(2)
        progress.asked(2)
        with engine_output(log):  # as the embedded judge runs vLLM: fds 1 and 2 to the log
            progress.answered(1)
        progress.update(2)
        progress.close()
    assert "progress: 1/2 rollouts" in terminal.read_text()
    assert "progress" not in log.read_text()
