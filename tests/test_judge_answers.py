"""A score is the judge's own, or it is unscored: the answer path under hostile answers.

Each answer comes from a real HTTP server on 127.0.0.1 (``fault_server``) through the
OpenAI-compatible judge, so the checks cover the client, :func:`finish` and the cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_server import FaultServer

from exprl_rewards.judges import JudgeCache, JudgeRequest, OpenAIJudge, judge_sync
from exprl_rewards.judges.base import DEFAULT_MIN_MASS
from exprl_rewards.judges.verdict import RawOutput, TokenLogprobs, finish


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def prefilled(script: str, key: str = "", **kw: object) -> JudgeRequest:
    """A score-only request whose answer starts with "Score: " (the default judge's)."""
    content = f"Grade {key or script}. FAULT:{script}"
    return JudgeRequest(
        messages=({"role": "user", "content": content},),
        key=key or script,
        score_only=True,
        prefill="Score: ",
        **kw,  # type: ignore[arg-type]
    )


def judge(server: FaultServer, **kw: object) -> OpenAIJudge:
    options: dict[str, object] = {
        "timeout": 2.0,
        "max_attempts": 2,
        "backoff": 0.01,
        "max_backoff": 0.05,
        "top_logprobs": 5,
        "prefill": True,
    }
    options.update(kw)
    return OpenAIJudge("fault-model", base_url=server.url, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("echo", "parse: no score line"),  # "Score: 1-5", a "1" 90% likely at its start
        ("refuse", "parse: no score line"),  # digits among the first token's alternatives
        ("ten", "parse: score 10 is outside the 1-5 scale"),  # tokens "1", "0"
    ],
)
def test_a_rejected_answer_is_unscored_whatever_the_logprobs(
    server: FaultServer, script: str, reason: str
) -> None:
    (result,) = judge_sync(judge(server), [prefilled(script)])
    assert result.score is None
    assert result.reason == reason
    assert result.expected is None
    assert result.normalized().value is None


def test_logprobs_refine_only_with_enough_mass_at_the_written_number(server: FaultServer) -> None:
    (low,) = judge_sync(judge(server), [prefilled("lowmass")])
    assert low.score == low.parsed == 4.0  # the written 4 stands, not the 3e-7 "1"
    assert low.expected is None
    assert low.mass == pytest.approx(3.06e-7, rel=1e-2)
    assert DEFAULT_MIN_MASS == 0.5

    # "Score: 4" with 0.97 of the mass on digits: refined, unless min_mass asks for more.
    refined, strict = judge_sync(
        judge(server),
        [prefilled("ok", key="a"), prefilled("ok", key="b", min_mass=0.99)],
    )
    assert refined.score == refined.expected == pytest.approx(4.0910, abs=1e-3)
    assert strict.score == strict.parsed == 4.0
    assert strict.mass == pytest.approx(0.9655, abs=1e-3)


def test_quoted_think_and_forged_fence_do_not_hide_the_verdict(server: FaultServer) -> None:
    request = JudgeRequest(messages=({"role": "user", "content": "Grade. FAULT:quote"},))
    (result,) = judge_sync(judge(server, prefill=False, top_logprobs=None), [request])
    assert result.score == 1.0
    assert result.reason is None


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("content_int", "content is int, not a string"),
        ("content_parts", "content is list, not a string"),
        ("logprob_huge", "1e+308"),
        ("logprob_str", "'likely'"),
        ("logprob_null", "None"),
        ("token_null", "token 7: None is not a string"),
    ],
)
def test_a_malformed_answer_is_unscored_and_never_cached(
    server: FaultServer, tmp_path: Path, script: str, problem: str
) -> None:
    j = judge(server, cache=tmp_path / "judge.sqlite", prefill=False)
    plain = [
        JudgeRequest(messages=({"role": "user", "content": f"Grade. FAULT:{s}"},), key=s)
        for s in ("ok", script)
    ]
    good, bad = judge_sync(j, plain)
    assert good.score is not None
    assert bad.score is None
    assert bad.reason is not None
    assert bad.reason.startswith("backend: malformed answer: ")
    assert problem in bad.reason
    assert bad.attempts == 2  # retried like any malformed body, then given up
    assert len(JudgeCache(tmp_path / "judge.sqlite")) == 1  # only the good answer
    # A rerun asks again (nothing was cached) and still does not crash.
    calls = server.requests
    _, again = judge_sync(j, plain)
    assert again.score is None
    assert server.requests == calls + 2


def test_a_poisoned_cache_entry_is_a_miss_not_a_crash(server: FaultServer, tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    j = judge(server, cache=path, prefill=False)
    request = JudgeRequest(messages=({"role": "user", "content": "Grade. FAULT:ok"},))
    key = request.cache_key(j.backend, j.model, j.sampling())
    cache = JudgeCache(path)
    cache.put_many([(key, "fault-model", RawOutput(text=4))])  # type: ignore[arg-type]
    with sqlite3.connect(path) as db:  # and one entry that is not even JSON
        db.execute("INSERT INTO judgements (key, model, output) VALUES ('x', 'm', '{oops')")
    assert cache.get_many(["x"]) == {}
    (result,) = judge_sync(j, [request])
    assert result.score is not None
    assert not result.cached
    assert server.requests == 1
    (second,) = judge_sync(j, [request])  # the new answer replaced the bad entry
    assert second.cached
    assert second.score == result.score


def test_timeout_bounds_the_whole_attempt_not_each_read(server: FaultServer) -> None:
    """A server that trickles a valid answer one byte at a time (~20 s) cannot hold a run:
    every read is quick, so only a deadline over the attempt stops it."""
    request = JudgeRequest(messages=({"role": "user", "content": "Grade. FAULT:trickle"},))
    (result,) = judge_sync(judge(server, timeout=1.0, max_attempts=1, prefill=False), [request])
    assert result.score is None
    assert result.reason == "backend: timeout"
    assert result.attempts == 1


def test_logprobs_that_contradict_the_text_are_a_malformed_answer() -> None:
    request = JudgeRequest(messages=({"role": "user", "content": "Grade."},), prefill="Score: ")
    top = (("5", -0.01), ("1", -4.6))
    # The text says 1; its own logprob claims 0.99, its top-list entry 0.01.
    forged = RawOutput("1", (TokenLogprobs("1", -0.01, top),))
    judgement = finish(request, forged, backend="openai", model="m")
    assert judgement.score is None
    assert judgement.reason is not None
    assert judgement.reason.startswith("backend: malformed answer")
    assert "top list" in judgement.reason
    # Missing from the list yet likelier than its last entry: also impossible.
    absent = RawOutput("1", (TokenLogprobs("1", -0.01, (("5", -0.01), ("4", -4.6))),))
    assert finish(request, absent, backend="openai", model="m").score is None
    # Consistent: the sampled 1 at its listed logprob; the distribution refines it.
    honest = RawOutput("1", (TokenLogprobs("1", -4.6, top),))
    assert finish(request, honest, backend="openai", model="m").score is not None


def test_a_judge_cut_inside_its_own_reasoning_is_unscored() -> None:
    request = JudgeRequest(messages=({"role": "user", "content": "Grade."},))
    cut = RawOutput("<think>\nScore: 5 looks right, but", finish_reason="length")
    judgement = finish(request, cut, backend="openai", model="m")
    assert judgement.score is None
    assert "inside the judge's <think>" in (judgement.reason or "")
    done = RawOutput("<think>\nScore: 5 looks right", finish_reason="stop")
    assert finish(request, done, backend="openai", model="m").score == 5.0
