"""The SQLite judge cache: round trips, and many writers at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from exprl_rewards.judges import JudgeCache, JudgeRequest, RawOutput, TokenLogprobs

WRITER = """
import sys
from exprl_rewards.judges import JudgeCache, RawOutput
cache = JudgeCache(sys.argv[1])
for i in range(200):
    cache.put_many([(f"{sys.argv[2]}-{i}", "m", RawOutput(f"Score: {i % 5 + 1}"))])
"""


def test_round_trip_keeps_tokens_and_usage(tmp_path: Path) -> None:
    raw = RawOutput(
        "Score: 4",
        tokens=(
            TokenLogprobs("Score", -0.1, (("Score", -0.1),), 5),
            TokenLogprobs("é", -0.2, (("é", -0.2), ("4", -3.0)), 2),
        ),
        prompt_tokens=10,
        completion_tokens=2,
        cached_tokens=8,
        finish_reason="stop",
    )
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([("k", "m", raw)])
        assert cache.get_many(["k"]) == {"k": raw}
        assert (cache.hits, cache.misses) == (1, 0)
    with JudgeCache(tmp_path / "c.sqlite") as reopened:  # persisted
        assert reopened.get_many(["k", "x"]) == {"k": raw}
        assert reopened.misses == 1


def test_cache_key_covers_everything_that_changes_the_output() -> None:
    base = JudgeRequest(messages=({"role": "user", "content": "x"},), template_id="t")
    key = base.cache_key("openai", "m", {"temperature": 0})
    variants = [
        JudgeRequest(messages=({"role": "user", "content": "y"},), template_id="t"),
        JudgeRequest(messages=base.messages, template_id="t2"),
        JudgeRequest(messages=base.messages, template_id="t", prefill="Score: "),
        JudgeRequest(messages=base.messages, template_id="t", max_tokens=8),
    ]
    keys = {v.cache_key("openai", "m", {"temperature": 0}) for v in variants}
    keys |= {
        base.cache_key("vllm", "m", {"temperature": 0}),
        base.cache_key("openai", "m2", {"temperature": 0}),
    }
    keys.add(base.cache_key("openai", "m", {"temperature": 0.7}))
    assert key not in keys
    assert len(keys) == 7
    # The caller's label is not part of the key: the same prompt is the same judgement.
    assert (
        JudgeRequest(messages=base.messages, template_id="t", key="r1").cache_key(
            "openai", "m", {"temperature": 0}
        )
        == key
    )


def test_concurrent_processes_and_threads_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    JudgeCache(path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}"]) for n in range(3)
    ]
    cache = JudgeCache(path)

    def write(name: str) -> None:
        for i in range(200):
            cache.put_many([(f"{name}-{i}", "m", RawOutput("Score: 1"))])

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(w.wait(timeout=120) == 0 for w in writers)
    assert len(cache) == 6 * 200
    got = cache.get_many([f"p1-{i}" for i in range(200)])
    assert [got[f"p1-{i}"].text for i in range(5)] == [f"Score: {i % 5 + 1}" for i in range(5)]


def test_a_pickled_cache_reopens_its_file(tmp_path: Path) -> None:
    """Reward functions are pickled to trainer workers: the cache goes with them."""
    import pickle

    from exprl_rewards.judges import OpenAIJudge

    cache = JudgeCache(tmp_path / "c.sqlite")
    cache.put_many([("k", "m", RawOutput("Score: 3"))])
    judge = OpenAIJudge("m", base_url="http://127.0.0.1:9/v1", cache=cache)
    copy = pickle.loads(pickle.dumps(judge))
    assert copy.cache is not None
    assert copy.cache.path == cache.path
    assert copy.cache.get_many(["k"])["k"].text == "Score: 3"
    copy.cache.put_many([("k2", "m", RawOutput("Score: 4"))])
    assert cache.get_many(["k2"])["k2"].text == "Score: 4"
