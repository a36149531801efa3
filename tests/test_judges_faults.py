"""The OpenAI-compatible judge against a real local server that misbehaves on cue."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fault_server import FaultServer

from exprl_rewards.judges import JudgeCache, JudgeRequest, OpenAIJudge, judge_sync


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def request(script: str, key: str = "") -> JudgeRequest:
    key = key or script
    content = f"Grade {key}. FAULT:{script}"  # distinct requests: the judge dedupes identical ones
    return JudgeRequest(messages=({"role": "user", "content": content},), key=key)


def judge(server: FaultServer, **kw: object) -> OpenAIJudge:
    options: dict[str, object] = {
        "timeout": 1.0,
        "max_attempts": 3,
        "backoff": 0.01,
        "max_backoff": 0.05,
    }
    options.update(kw)
    return OpenAIJudge("fault-model", base_url=server.url, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("script", "attempts"),
    [
        ("ok", 1),
        ("429,ok", 2),
        ("500,503,ok", 3),
        ("slow,ok", 2),  # the first attempt times out
        ("garbage,ok", 2),  # 200 with a non-JSON body
        ("empty,ok", 2),  # 200 with no choices
        ("truncated,ok", 2),  # body shorter than its Content-Length
        ("drop,ok", 2),  # connection closed without an answer
    ],
)
def test_transient_faults_are_retried_until_scored(
    server: FaultServer, script: str, attempts: int
) -> None:
    (result,) = judge_sync(judge(server), [request(script)])
    assert result.score == 4.0
    assert result.reason is None
    assert result.attempts == attempts
    assert result.prompt_tokens == 11
    assert result.completion_tokens == 5


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("400", "400 Bad Request: injected 400"),
        ("401", "401 Unauthorized"),
        ("404", "404 Not Found"),
    ],
)
def test_permanent_client_errors_are_not_retried(
    server: FaultServer, script: str, reason: str
) -> None:
    (result,) = judge_sync(judge(server), [request(script)])
    assert result.score is None
    assert result.attempts == 1
    assert result.reason == f"backend: {reason}" or reason in (result.reason or "")
    assert server.requests == 1


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("500", "backend: 500 Internal Server Error: injected 500 after 3 attempts"),
        ("429", "backend: 429 Too Many Requests: injected 429 after 3 attempts"),
        ("slow", "backend: timeout after 3 attempts"),
        ("drop", "backend: connection error"),
        ("garbage", "JSONDecodeError"),
        ("score7", "parse: score 7 is outside the 1-5 scale"),
    ],
)
def test_persistent_faults_end_unscored_with_a_reason(
    server: FaultServer, script: str, reason: str
) -> None:
    (result,) = judge_sync(judge(server), [request(script)])
    assert result.score is None
    assert result.reason is not None
    assert reason in result.reason
    assert result.normalized().reason == result.reason  # not a 0


def test_a_mixed_batch_keeps_every_request_in_order(server: FaultServer) -> None:
    scripts = ["ok", "429,ok", "400", "drop,ok", "500", "garbage,ok", "score7", "slow,ok"] * 3
    batch = [request(s, key=f"{i}:{s}") for i, s in enumerate(scripts)]
    results = judge_sync(judge(server, concurrency=4), batch)
    assert [r.key for r in results] == [r.key for r in batch]
    for script, result in zip(scripts, results, strict=True):
        if script.endswith("ok"):
            assert result.score == 4.0
        else:
            assert result.score is None
            assert result.reason


def test_logprob_weighted_score(server: FaultServer) -> None:
    (result,) = judge_sync(judge(server, top_logprobs=5), [request("ok")])
    assert result.parsed == 4.0
    assert result.mass == pytest.approx(0.9655, abs=1e-3)
    assert result.score == result.expected == pytest.approx(4.0910, abs=1e-3)
    assert result.normalized().value == pytest.approx((4.0910 - 1) / 4, abs=1e-3)


def test_a_replica_that_is_down_is_skipped(server: FaultServer) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    j = OpenAIJudge(
        "fault-model",
        base_url=[dead, server.url],
        timeout=1.0,
        max_attempts=3,
        backoff=0.01,
        concurrency=1,
    )
    results = judge_sync(j, [request("ok", key=str(i)) for i in range(6)])
    assert all(r.score == 4.0 for r in results)
    assert (
        sum(r.attempts for r in results) <= 7
    )  # the dead replica costs one attempt, then is skipped


def test_cache_answers_the_second_pass_without_calls(server: FaultServer, tmp_path: Path) -> None:
    j = judge(server, cache=tmp_path / "judge.sqlite")
    batch = [request("ok", key="a"), request("429,ok", key="b"), request("400", key="c")]
    first = judge_sync(j, batch)
    calls = server.requests
    second = judge_sync(j, batch)
    assert [r.cached for r in second] == [True, True, False]  # failures are not cached
    assert [r.score for r in second] == [r.score for r in first]
    assert second[0].attempts == 0
    assert second[0].text == first[0].text
    assert server.requests == calls + 1  # only the 400 was asked again
    assert len(JudgeCache(tmp_path / "judge.sqlite")) == 2


def test_works_from_inside_a_running_event_loop(server: FaultServer) -> None:
    j = judge(server)

    async def trainer_step() -> list[float | None]:
        sync_results = judge_sync(j, [request("ok", key="sync")])  # a sync reward fn in a loop
        async_results = await j.judge([request("429,ok", key="async")])
        return [r.score for r in sync_results + async_results]

    assert asyncio.run(trainer_step()) == [4.0, 4.0]


def test_concurrent_batches_on_one_loop_share_the_judge(server: FaultServer) -> None:
    j = judge(server, concurrency=2)

    async def main() -> list[list[float | None]]:
        batches = [[request("ok", key=f"{b}-{i}") for i in range(5)] for b in range(3)]
        results = await asyncio.gather(*(j.judge(batch) for batch in batches))
        return [[r.score for r in rs] for rs in results]

    assert asyncio.run(main()) == [[4.0] * 5] * 3


def test_identical_requests_in_a_batch_are_judged_once(server: FaultServer) -> None:
    same = JudgeRequest(messages=({"role": "user", "content": "Grade this. FAULT:ok"},))
    batch = [replace(same, key=f"copy{i}") for i in range(5)]
    results = judge_sync(judge(server), batch)
    assert server.requests == 1
    assert [r.key for r in results] == [f"copy{i}" for i in range(5)]
    assert len({r.score for r in results}) == 1
    assert [r.attempts for r in results] == [1, 0, 0, 0, 0]
