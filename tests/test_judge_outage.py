"""A judge that is down, misnamed, redirected or failing mid-run is an error, not a result.

Each case runs the real command line (or the real reward server) against real HTTP
servers on 127.0.0.1: a closed port, the fault server, a server that answers every
request with a 307, and the real vLLM judge under a wrong model name. Each asserts the
non-zero exit, a message naming the judge and the way out, and that nothing was written
that could pass for a result.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.cli.audit import main as audit_main
from exprl_rewards.cli.score import main
from exprl_rewards.judges.guards import get_guards
from exprl_rewards.judges.health import check_judge_sync
from exprl_rewards.judges.local_model import VLLMServer
from exprl_rewards.judges.openai import OpenAIJudge
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.serve import RewardServer

JUDGE = ["--no-cache", "--top-logprobs", "0", "--progress", "off", "--mode", "outcome"]


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def rows(tmp_path: Path, specs: list[tuple[str, str, str]]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": rid,
                    "group_id": g,
                    "question": "Q?",
                    "reference": "R.",
                    "response": f"a [[score 4]] {extra}",
                }
            )
            + "\n"
            for rid, g, extra in specs
        )
    )
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_dead_judge_url_exits_3_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rows(tmp_path, [("r1", "g", "")])
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    url = dead_url()
    code = main([str(source), "-o", str(out), "--summary-json", str(summary),
                 "--base-url", url, "--model", "judge", *JUDGE])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert url in err
    assert "cannot be reached" in err
    assert "Start the judge server" in err
    assert not out.exists()
    assert not summary.exists()


def test_a_url_without_a_scheme_is_refused_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rows(tmp_path, [("r1", "g", "")])
    code = main([str(source), "-o", str(tmp_path / "o.jsonl"), "--base-url", "127.0.0.1:8000/v1",
                 "--model", "judge", *JUDGE])  # fmt: skip
    assert code == 1
    assert "http://127.0.0.1:8000/v1" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_model_without_base_url_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rows(tmp_path, [("r1", "g", "")])
    code = main([str(source), "-o", str(tmp_path / "o.jsonl"), "--model", "judge", *JUDGE])
    assert code == 1
    assert "--base-url" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_wrong_model_name_on_the_real_vllm_judge_names_what_it_serves(
    judge_server: VLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rows(tmp_path, [("r1", "g", "")])
    out = tmp_path / "out.jsonl"
    code = main([str(source), "-o", str(out), "--base-url", judge_server.url,
                 "--model", "no-such-model", *JUDGE])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert "'no-such-model'" in err
    assert judge_server.model in err
    assert "--model" in err
    assert not out.exists()


def test_the_real_judge_passes_its_check_and_its_root_keys_the_run(
    judge_server: VLLMServer, tmp_path: Path
) -> None:
    judge = OpenAIJudge(judge_server.model, base_url=judge_server.url, prefill=True)
    name_only = judge._cache_model()
    assert judge.identity()["revision"] is None
    checked = check_judge_sync(judge)
    assert checked["revision"]
    assert checked["revision"] != judge_server.model
    assert judge._cache_model() != name_only


def test_a_redirect_is_refused_and_the_prompt_never_reaches_the_target(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rows(tmp_path, [("r1", "g", "")])
    out = tmp_path / "out.jsonl"
    before = server.requests
    with FaultServer(redirect_to=server.url) as redirecting:
        code = main([str(source), "-o", str(out), "--base-url", redirecting.url,
                     "--model", "marks", *JUDGE])  # fmt: skip
        # and mid-run (no check): each request is a backend failure, none is followed
        code_unchecked = main([str(source), "-o", str(out), "--base-url", redirecting.url,
                               "--model", "marks", "--no-judge-check", *JUDGE])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert code_unchecked == 3
    assert "307" in err
    assert "redirect" in err
    assert server.requests == before  # the prompt, reference included, went nowhere else
    assert not out.exists() or read(out) == []


def test_rollouts_the_judge_never_answered_are_not_written_and_a_rerun_grades_them(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # g2/b fails 5 times (all of a first run's attempts), then answers.
    source = rows(tmp_path, [("a1", "g1", ""), ("a2", "g1", ""), ("b1", "g2", ""),
                             ("b2", "g2", f"FAULT:{','.join(['500'] * 5)},ok {tmp_path.name}"),
                             ("c1", "g3", ""), ("c2", "g3", "")])  # fmt: skip
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    args = [str(source), "-o", str(out), "--base-url", server.url, "--model", "marks",
            "--summary-json", str(summary), "--max-backend-failures", "0.5", *JUDGE]  # fmt: skip
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "got no answer" in err
    assert "500" in err
    assert "Rerun the same command" in err
    assert [r["id"] for r in read(out)] == ["a1", "a2", "c1", "c2"]  # g2 held back whole
    s = json.loads(summary.read_text())
    assert (s["backend_failed"], s["not_written"]) == (1, 2)
    assert main(args) == 0  # the rerun grades g2, now answered
    written = read(out)
    assert sorted(r["id"] for r in written) == ["a1", "a2", "b1", "b2", "c1", "c2"]
    assert all(r["exprl"]["score"] == 0.75 for r in written)
    assert main(args) == 0  # nothing left: nothing written twice
    assert len(read(out)) == 6


def test_a_judge_that_keeps_failing_stops_the_run_past_the_threshold(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [(f"r{i}", f"g{i}", f"FAULT:503 {tmp_path.name}" if i >= 2 else "") for i in range(12)]
    source = rows(tmp_path, specs)
    out = tmp_path / "out.jsonl"
    before = server.requests
    code = main([str(source), "-o", str(out), "--base-url", server.url, "--model", "marks",
                 "--batch-size", "2", "--max-backend-failures", "0.3", *JUDGE])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert "--max-backend-failures 0.3" in err
    assert "stopped" in err
    assert [r["id"] for r in read(out)] == ["r0", "r1"]
    # batch 2 (r2, r3) fails: 2 of 4 > 0.3, so r4... were never sent
    assert server.requests - before <= 1 + 2 + 2 * 5


def test_the_audit_with_a_dead_judge_fails_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "labelled.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"r{i}", "group_id": "g", "question": "Q", "reference": "R",
                            "response": "A", "correct": i % 2}) + "\n" for i in range(8))
    )  # fmt: skip
    url = dead_url()
    code = audit_main(["--data", f"jsonl:{data}", "-o", str(tmp_path / "report"),
                       "--base-url", url, "--model", "judge", "--no-cache"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert url in err
    assert "cannot be reached" in err
    assert not (tmp_path / "report").exists()


def get(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_reward_server_reports_a_dead_judge_and_never_answers_neutral_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = dead_url()
    judge = OpenAIJudge("judge", base_url=url, max_attempts=1)
    body = {"query": ["Q: 1+1?\nA: 2", "Q: 1+1?\nA: 3"], "prompts": ["Q: 1+1?\n"] * 2,
            "labels": ["2", "2"]}  # fmt: skip
    with RewardServer(RewardPipeline(judge, mode="outcome"), port=0) as rs:
        status, health = get(rs.url + "/health")
        assert status == 503
        assert health["status"] == "unavailable"
        assert url in health["error"]
        status, answer = get(rs.url + "/get_reward", body)
        assert status == 503
        assert "answered none of the 2 samples" in answer["error"]
        assert "rewards" not in answer
        status, answer = get(rs.url + "/score", {"rollouts": [
            {"id": "a", "question": "Q", "reference": "R", "response": "A"}]})  # fmt: skip
        assert status == 503
    assert sum("judge backend failure" in r.getMessage() for r in caplog.records) >= 3


def test_a_dead_judge_behind_a_content_gate_is_still_a_503() -> None:
    """A sample the gate settles without asking the judge is no answer from it."""
    judge = OpenAIJudge("judge", base_url=dead_url(), max_attempts=1)
    pipeline = RewardPipeline(judge, mode="outcome", guards=get_guards("content-gate"))
    body = {"query": ["Q\nA: 2", "Q\nSolution:"], "prompts": ["Q\n"] * 2,
            "labels": ["2", "2"]}  # fmt: skip
    with RewardServer(pipeline, port=0) as rs:
        status, answer = get(rs.url + "/get_reward", body)
    assert status == 503
    assert "answered none of the 1 samples" in answer["error"]


def test_the_reward_server_flags_samples_the_judge_did_not_answer(server: FaultServer) -> None:
    judge = OpenAIJudge("marks", base_url=server.url, max_attempts=1)
    body = {"query": ["Q\nA [[score 5]]", "Q\nA FAULT:500 x"], "prompts": ["Q\n"] * 2,
            "labels": ["R", "R"]}  # fmt: skip
    with RewardServer(RewardPipeline(judge, mode="outcome"), port=0) as rs:
        assert get(rs.url + "/health")[0] == 200
        status, answer = get(rs.url + "/get_reward", body)
    assert status == 200
    assert answer["extra_logs"]["exprl_backend_failed"] == [0.0, 1.0]
    assert answer["extra_logs"]["exprl_unscored"] == [0.0, 1.0]


@pytest.mark.parametrize(
    "raw",
    [
        '"labels": [NaN]',
        '"labels": [Infinity]',
        '"labels": [-Infinity]',
        '"labels": [1e400]',
        '"labels": [{"solution": NaN}]',
    ],
)
def test_non_finite_labels_are_a_400_naming_the_sample(server: FaultServer, raw: str) -> None:
    judge = OpenAIJudge("marks", base_url=server.url)
    data = ('{"query": ["Q\\nA"], "prompts": ["Q\\n"], ' + raw + "}").encode()
    with RewardServer(RewardPipeline(judge, mode="outcome"), port=0) as rs:
        request = urllib.request.Request(rs.url + "/get_reward", data=data)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=30)
    assert e.value.code == 400
    assert "sample 0" in json.loads(e.value.read())["error"]


def test_an_empty_reference_is_unscored_on_every_endpoint(server: FaultServer) -> None:
    judge = OpenAIJudge("marks", base_url=server.url)
    before = server.requests
    with RewardServer(RewardPipeline(judge, mode="outcome"), port=0) as rs:
        status, answer = get(rs.url + "/score", {"rollouts": [
            {"id": "a", "question": "Q", "reference": "  ", "response": "A [[score 5]]"}]})  # fmt: skip
    assert status == 200
    assert answer["results"][0]["score"] is None
    assert answer["results"][0]["reason"].startswith("empty reference")
    assert server.requests == before


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "abc"])
def test_serve_refuses_a_non_finite_unscored_value(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from exprl_rewards.serve import main as serve_main

    with pytest.raises(SystemExit) as e:
        serve_main(["--unscored", value])
    assert e.value.code == 2
    assert "--unscored" in capsys.readouterr().err


def test_every_trainer_adapter_stops_on_a_dead_judge() -> None:
    """TRL, verl (batch, streaming and token rewards): a judge that answered nothing is
    an error, never a list of None or neutral fills that a trainer would train on."""
    import asyncio

    from exprl_rewards.adapters import TRLReward, VerlReward
    from exprl_rewards.errors import JudgeUnavailable

    judge = OpenAIJudge("judge", base_url=dead_url(), max_attempts=1)
    pipeline = RewardPipeline(judge, mode="outcome")
    prompts, completions = ["1+1?", "1+1?"], ["2", "3"]
    with pytest.raises(JudgeUnavailable, match=r"none of 2 sample\(s\) from TRL"):
        TRLReward(pipeline)(prompts, completions, solution=["2", "2"])
    reward = VerlReward(pipeline)
    with pytest.raises(JudgeUnavailable, match=r"none of 2 sample\(s\) from verl"):
        reward.score_batch(completions, ["2", "2"])
    with pytest.raises(JudgeUnavailable, match="none of 1 sample"):
        asyncio.run(reward.score_one("2", "2", {"question": "1+1?"}))
    with pytest.raises(JudgeUnavailable, match=r"none of 2 sample\(s\) from verl"):
        reward.token_level_rewards(completions, [[(0, 1)], [(0, 1)]], 4, ["2", "2"])
