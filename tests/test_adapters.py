"""TRL, verl and OpenRLHF adapters, called the way the trainers call them.

The judge is the deterministic fault server (a real HTTP server answering "Score: N"
for the last ``[[score N]]`` mark), so every expected reward is known. The real
trainers and the real judge are in ``test_trainers.py``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from fault_server import FaultServer

from exprl_rewards.adapters import (
    AsyncTRLReward,
    TRLReward,
    VerlReward,
    compute_score,
    compute_score_batch,
    compute_score_sync,
    token_offsets,
)
from exprl_rewards.errors import InputError
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.serve import RewardServer

from conftest import readme_snippet


@pytest.fixture
def pipeline(fault: FaultServer) -> RewardPipeline:
    judge = OpenAIJudge("marks", base_url=fault.url, max_attempts=1, timeout=5)
    return RewardPipeline(judge, mode="outcome")


# --- TRL ----------------------------------------------------------------------------


def test_trl_plain_and_conversational_completions(pipeline: RewardPipeline) -> None:
    reward = TRLReward(pipeline, reference_column="solution")
    out = reward(
        prompts=["What is 2+2?", "What is 2+2?", "And 3+3?"],
        completions=["4 [[score 5]]", "5 [[score 1]]", "no idea [[score none]]"],
        completion_ids=None,
        solution=["2+2=4", "2+2=4", "3+3=6"],
        trainer_state=None,
    )
    assert out == [1.0, 0.0, None]  # (5 - 1) / 4, (1 - 1) / 4, unscored is None, not 0
    chat = reward(
        prompts=[[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]],
        completions=[[{"role": "assistant", "content": "A [[score 3]]"}]],
        solution=["R"],
    )
    assert chat == [0.5]
    assert reward.__name__ == "exprl"


def test_trl_logs_the_unscored_fraction_and_names_a_missing_column(
    pipeline: RewardPipeline,
) -> None:
    logged: list[tuple[str, float]] = []
    reward = TRLReward(pipeline, name="judge")
    reward(
        prompts=["Q", "Q"],
        completions=["[[score 4]]", "[[score none]]"],
        solution=["R", "R"],
        log_metric=lambda name, value: logged.append((name, value)),
    )
    assert logged == [
        ("judge/unscored_frac", 0.5),
        ("judge/step_score_mean/1", 0.75),  # (4 - 1) / 4, the one scored rollout
        ("judge/steps_per_response", 1.0),
        ("judge/groups_all_zero", 0.0),
        ("judge/groups_all_one", 0.0),
        ("judge/groups_mixed", 1.0),  # neither all 0 nor all 1
        ("judge/groups_unscored", 0.0),
        ("judge/last_step_mean", 0.75),
        ("judge/last_step_std", 0.0),
        ("judge/guard/content-gate", 0.0),  # shares of rollouts each guard fired on
        ("judge/guard/neutraliser", 0.0),
        ("judge/guard/verifier-cap", 0.0),
        ("judge/guard/second-look", 0.0),
    ]
    with pytest.raises(InputError, match=r"no 'answer' column.*columns: solution"):
        TRLReward(pipeline, reference_column="answer")(["Q"], ["x"], solution=["R"])


def test_trl_reward_pickles_and_runs_inside_a_running_loop(pipeline: RewardPipeline) -> None:
    reward = pickle.loads(pickle.dumps(TRLReward(pipeline, name="exprl_judge")))
    assert reward.__name__ == "exprl_judge"

    async def trainer_loop() -> list[float | None]:
        return reward(["Q"], ["[[score 2]]"], solution=["R"])  # sync call in a running loop

    assert asyncio.run(trainer_loop()) == [0.25]
    async_reward = AsyncTRLReward(pipeline)
    assert asyncio.run(async_reward(["Q"], ["[[score 5]]"], solution=["R"])) == [1.0]


# --- verl ---------------------------------------------------------------------------


def test_verl_compute_score_reads_extra_info_and_keeps_keys_stable(fault: FaultServer) -> None:
    kwargs: dict[str, Any] = {
        "base_url": fault.url,
        "model": "marks",
        "mode": "outcome",
        "top_logprobs": None,
    }
    one = compute_score_sync(
        "gsm8k", "x = 4 [[score 4]]", "4", {"solution": "2+2 = 4", "question": "2+2?"}, **kwargs
    )
    assert one == {"score": 0.75, "exprl_raw": 4.0, "exprl_unscored": 0.0}
    assert asyncio.run(compute_score("gsm8k", "x = 4 [[score 4]]", "4", {"solution": "S"},
                                     **kwargs)) == one  # fmt: skip
    batch = compute_score_batch(
        data_sources=["gsm8k"] * 3,
        solution_strs=["[[score 5]]", "[[score 2]]", "[[score none]]"],
        ground_truths=["4", "4", "4"],
        extra_infos=[{"solution": "S", "question": "Q", "index": 0}] * 3,
        **kwargs,
    )
    assert [set(d) for d in batch] == [{"score", "exprl_raw", "exprl_unscored"}] * 3
    # the unscored one gets its group's mean (zero GRPO advantage), and is flagged
    assert [d["score"] for d in batch] == [1.0, 0.25, 0.625]
    assert [d["exprl_unscored"] for d in batch] == [0.0, 0.0, 1.0]
    assert np.isnan(batch[2]["exprl_raw"])
    with pytest.raises(InputError, match="no reference solution"):
        compute_score_sync("gsm8k", "x", None, {}, **kwargs)


def test_verl_token_level_rewards_from_real_tokenizer_offsets(fault: FaultServer) -> None:
    from transformers import AutoTokenizer

    from exprl_rewards.judges.local_model import default_model_dir

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    judge = OpenAIJudge("marks", base_url=fault.url, max_attempts=1, timeout=5)
    reward = VerlReward(RewardPipeline(judge, mode="process-segment", slicer="newline"))
    texts = ["Step one ✓ [[score 5]]\nStep two [[score 1]]", "Only step [[score 3]]"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    decoded, offsets = zip(*(token_offsets(tokenizer, i) for i in ids), strict=True)
    assert list(decoded) == texts
    for text, offs in zip(decoded, offsets, strict=True):
        assert "".join(text[s:e] for s, e in offs) == text
    width = max(map(len, ids)) + 3
    matrix, extra = reward.token_level_rewards(
        decoded, offsets, width, ["R", "R"], [{"index": 0}, {"index": 1}], place="last"
    )
    assert matrix.shape == (2, width)
    assert matrix.dtype == np.float32
    first_line_end = next(i for i, (s, e) in enumerate(offsets[0]) if "\n" in texts[0][s:e])
    assert matrix[0, first_line_end] == 1.0  # the first line's last token
    assert matrix[0, len(ids[0]) - 1] == 0.0  # score 1 -> 0.0, at the end
    assert np.count_nonzero(matrix[0]) == 1
    assert matrix[1, len(ids[1]) - 1] == 0.5
    assert np.count_nonzero(matrix[1, len(ids[1]) :]) == 0  # padding stays 0
    assert extra["exprl_unscored"] == [0.0, 0.0]
    spread, _ = reward.token_level_rewards(
        decoded, offsets, width, ["R", "R"], [{"index": 0}, {"index": 1}], place="all"
    )
    assert np.all(spread[1, : len(ids[1])] == 0.5)


# --- OpenRLHF server ----------------------------------------------------------------


@pytest.fixture
def server(pipeline: RewardPipeline) -> Iterator[RewardServer]:
    with RewardServer(
        pipeline, port=0, token="s3cret", max_body_bytes=20_000, max_batch=50
    ) as running:
        yield running


def post(server: RewardServer, path: str, body: Any, token: str = "s3cret") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        server.url + path,
        data=data,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        timeout=30,
    )


def openrlhf_body(n: int, tag: str = "") -> dict[str, list[str]]:
    prompts = [f"<|user|>Question {i % 2}{tag}<|assistant|>" for i in range(n)]
    responses = [f" answer [[score {1 + i % 5}]]" for i in range(n)]
    return {
        "query": [p + r for p, r in zip(prompts, responses, strict=True)],
        "prompts": prompts,
        "labels": ["the reference"] * n,
    }


def test_openrlhf_protocol_and_health(server: RewardServer) -> None:
    reply = post(server, "/get_reward", openrlhf_body(5))
    assert reply.status_code == 200
    body = reply.json()
    assert body["rewards"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert body["scores"] == body["rewards"]
    assert body["extra_logs"]["exprl_unscored"] == [0.0] * 5
    label = json.dumps({"solution": "S", "question": "Q"})
    unscored = {"query": ["P x [[score none]]"], "prompts": ["P"], "labels": [label]}
    body = post(server, "/get_reward", unscored).json()
    assert body["rewards"] == [0.5]  # neutral, and flagged
    assert body["extra_logs"] == {
        "exprl_unscored": [1.0],
        "exprl_backend_failed": [0.0],  # a verdict without a score, not an outage
        "exprl_prompt_matched": [1.0],
        "exprl_guard_content_gate": [0.0],
        "exprl_guard_neutraliser": [0.0],
        "exprl_guard_verifier_cap": [0.0],
        "exprl_guard_second_look": [0.0],
    }
    health = requests.get(server.url + "/health", timeout=5).json()
    assert health["status"] == "ok"
    assert health["mode"] == "outcome"


def test_native_endpoint(server: RewardServer) -> None:
    rollouts = [
        {"id": "a", "group_id": "g", "question": "Q", "reference": "R", "response": "[[score 5]]"},
        {"id": "b", "group_id": "g", "question": "Q", "reference": "R", "response": "[[score 1]]"},
    ]
    body = post(server, "/score", {"rollouts": rollouts}).json()
    assert [r["score"] for r in body["results"]] == [1.0, 0.0]
    assert body["results"][0]["advantage"] > 0 > body["results"][1]["advantage"]
    assert body["summary"]["rollouts"] == 2
    reply = post(server, "/score", {"rollouts": [{"id": "a", "response": "x"}]})
    assert reply.status_code == 400
    assert "field 'reference' is missing" in reply.json()["error"]


def test_client_errors_are_clear_4xx(server: RewardServer) -> None:
    cases = [
        (post(server, "/get_reward", openrlhf_body(1), token="wrong"), 401, "bearer token"),
        (post(server, "/get_reward", b"{not json"), 400, "not JSON"),
        (post(server, "/get_reward", {"query": ["a"], "prompts": ["a", "b"], "labels": ["r"]}),
         400, "'prompts' has 2 items"),
        (post(server, "/get_reward", {"query": ["xy"], "prompts": ["z"], "labels": [True]}),
         400, "sample 0: a label must be text, a number or an object"),
        (post(server, "/get_reward", openrlhf_body(51)), 413, "limit is 50"),
        (post(server, "/get_reward", b" " * 30_000), 413, "limit is 20000"),
        (post(server, "/nope", {}), 404, "no such endpoint"),
    ]  # fmt: skip
    for reply, status, message in cases:
        assert reply.status_code == status, reply.text
        assert message in reply.json()["error"]


def test_concurrent_clients_share_the_judge(server: RewardServer, fault: FaultServer) -> None:
    results: dict[int, list[float]] = {}

    def client(k: int) -> None:
        results[k] = post(server, "/get_reward", openrlhf_body(10, tag=f"-{k}")).json()["rewards"]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r == [0.0, 0.25, 0.5, 0.75, 1.0] * 2 for r in results.values()), results


def test_slow_judging_becomes_an_explicit_504(fault: FaultServer) -> None:
    judge = OpenAIJudge("marks", base_url=fault.url, max_attempts=1, timeout=5)
    with RewardServer(
        RewardPipeline(judge, mode="outcome"), port=0, request_timeout=0.5
    ) as running:
        body = {"query": ["P FAULT:slow"], "prompts": ["P"], "labels": ["R"]}
        reply = requests.post(running.url + "/get_reward", json=body, timeout=30)
    assert reply.status_code == 504
    assert "longer than 0.5 s" in reply.json()["error"]


# --- the docs' snippets --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("name", ["trl"])
def test_readme_python_snippets_run(name: str, fault: FaultServer, tmp_path: Path) -> None:
    _, code = readme_snippet(name)
    code = code.replace("http://127.0.0.1:8000/v1", fault.url)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    printed = ast.literal_eval(out.stdout.strip())
    assert len(printed) == 1
    assert 0.0 <= printed[0] <= 1.0


def test_readme_openrlhf_snippet_runs(fault: FaultServer, tmp_path: Path) -> None:
    language, script = readme_snippet("openrlhf")
    assert language == "bash"
    root = Path(__file__).resolve().parents[1]
    script = script.replace("http://127.0.0.1:8000/v1", fault.url)
    script = script.replace("8787", str(free_port())).replace(".venv/bin/python", sys.executable)
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=root
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert set(reply) == {"rewards", "scores", "extra_logs"}
    assert len(reply["rewards"]) == 1
    assert 0.0 <= reply["rewards"][0] <= 1.0
