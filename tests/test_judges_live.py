"""Judges end to end with a real LLM: SmolLM2-135M-Instruct on vLLM (CPU), real rollouts.

The 135M judge is weak: these tests assert behaviour (scores in range or unscored with
a reason, usage counted, prefix and disk caches hit), not judge quality.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

from exprl_rewards.judges import Judgement, JudgeRequest, OpenAIJudge, judge_sync
from exprl_rewards.judges.local_model import VLLMServer, default_model_dir
from exprl_rewards.judges.parsing import parse_score
from exprl_rewards.judges.templates import get_template
from exprl_rewards.text.slicers import get_slicer

from conftest import read_jsonl

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def outcome_requests(data_dir: Path, name: str, questions: int = 2) -> list[JudgeRequest]:
    template = get_template(name)
    rows = read_jsonl(
        data_dir / "outcome_labels" / "gsm8k_example_model_solutions.jsonl", limit=questions
    )
    return [
        JudgeRequest.from_template(
            template,
            key=f"q{q}/{m}",
            question=row["question"],
            reference=row["ground_truth"],
            response=row[m]["solution"],
        )
        for q, row in enumerate(rows)
        for m in MODELS
    ]


def step_requests(data_dir: Path, name: str) -> list[JudgeRequest]:
    record = json.loads((data_dir / "step_labels" / "processbench" / "gsm8k.json").read_text())[1]
    text = "\n\n".join(record["steps"])
    segments = get_slicer("blank-line").split(text)
    template = get_template(name)
    reference = read_jsonl(data_dir / "references" / "gsm8k_test.jsonl", limit=2)[1]["answer"]
    return [
        JudgeRequest.from_template(
            template,
            key=f"step{s.index}",
            question=record["problem"],
            reference=reference,
            response=text,
            step=s.text,
            previous=text[: s.start],
            step_index=s.index + 1,
            num_steps=len(segments),
        )
        for s in segments
    ]


def assert_own_words(results: list[Judgement]) -> None:
    for r in results:
        written = parse_score(r.text, bare=True).value
        if r.scored:
            assert r.parsed is not None
            assert r.parsed == written
            assert r.mass is not None
            assert (r.expected is not None) == (r.mass >= 0.5)
        else:
            assert written is None or not 1 <= written <= 5
            assert r.reason is not None
            assert r.reason.startswith("parse: ")


def assert_well_formed(results: list[Judgement], requests: list[JudgeRequest]) -> None:
    assert [r.key for r in results] == [r.key for r in requests]
    for r in results:
        if r.scored:
            assert r.score is not None
            assert 1.0 <= r.score <= 5.0
            assert r.reason is None
        else:
            assert r.reason
            assert r.reason.startswith(("parse: ", "backend: "))
        assert r.prompt_tokens
        assert r.prompt_tokens > 100
        assert r.backend
        assert r.model


def test_score_only_outcome_with_logprobs_prefix_cache_and_disk_cache(
    judge_server: VLLMServer, data_dir: Path, tmp_path: Path
) -> None:
    requests = outcome_requests(data_dir, "outcome-score-only")
    judge = OpenAIJudge(
        judge_server.model,
        base_url=judge_server.url,
        top_logprobs=20,
        prefill=True,
        cache=tmp_path / "c.sqlite",
    )
    first = judge_sync(judge, requests[:1])  # warm the prefix cache with the shared part
    rest = judge_sync(judge, requests[1:])
    results = first + rest
    assert_well_formed(results, requests)
    assert all(
        r.text.startswith("Score: ") and r.completion_tokens and r.completion_tokens <= 8
        for r in results
    )
    # A score is the judge's own written number (refined by the logprobs at its token when
    # the digits hold half the probability there); anything else is unscored.
    assert_own_words(results)
    # Rollouts 2-4 of the first question reuse its instructions, problem and reference.
    assert all(r.cached_tokens is not None and r.cached_tokens > 200 for r in rest[:3])
    second = judge_sync(judge, requests)
    assert all(r.cached and r.attempts == 0 for r in second)
    assert [r.score for r in second] == [r.score for r in results]


def test_reasoning_template_ends_scored_or_unscored_with_reason(
    judge_server: VLLMServer, data_dir: Path
) -> None:
    requests = outcome_requests(data_dir, "outcome", questions=1)
    judge = OpenAIJudge(judge_server.model, base_url=judge_server.url, max_tokens=48, prefill=True)
    results = judge_sync(judge, requests)
    assert_well_formed(results, requests)
    assert all(
        r.text.startswith("Reasoning:") and r.completion_tokens and r.completion_tokens <= 48
        for r in results
    )


@pytest.mark.parametrize("name", ["process-segment-score-only", "process-prefix-score-only"])
def test_process_templates_grade_every_step_of_a_real_trace(
    judge_server: VLLMServer, data_dir: Path, name: str
) -> None:
    requests = step_requests(data_dir, name)
    assert len(requests) >= 3
    judge = OpenAIJudge(
        judge_server.model, base_url=judge_server.url, top_logprobs=20, prefill=True
    )
    results = judge_sync(judge, requests)
    assert_well_formed(results, requests)
    assert_own_words(results)
    scores = [r.normalized().value for r in results if r.scored]
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)


@pytest.fixture(scope="module")
def vllm_judge() -> object:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from exprl_rewards.judges.vllm import VLLMJudge

    with warnings.catch_warnings():  # torch and vLLM warn about their own internals
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return VLLMJudge(
            default_model_dir(), name="smollm2-135m-instruct", engine_process=False,
            max_model_len=2048, enforce_eager=True, max_tokens=32,
        )  # fmt: skip


def test_in_process_vllm_judge_agrees_with_the_server(
    vllm_judge: object, judge_server: VLLMServer, data_dir: Path
) -> None:
    requests = (
        outcome_requests(data_dir, "outcome-score-only", questions=1)
        + outcome_requests(data_dir, "outcome", questions=1)[:2]
    )
    local = judge_sync(vllm_judge, requests)  # type: ignore[arg-type]
    assert_well_formed(local, requests)
    assert all(r.backend == "vllm" and r.cached_tokens is not None for r in local)
    served = judge_sync(
        OpenAIJudge(
            judge_server.model,
            base_url=judge_server.url,
            top_logprobs=20,
            prefill=True,
            max_tokens=32,
        ),
        requests[:4],
    )
    # Same model, same prompts, greedy: the same written scores, and logprob-weighted
    # scores that agree closely where both have them.
    assert_own_words(local)
    assert_own_words(served)
    for a, b in zip(local[:4], served, strict=True):
        assert a.parsed == b.parsed
        if a.expected is not None and b.expected is not None:
            assert abs(a.expected - b.expected) < 0.3


def test_one_overlong_prompt_leaves_the_rest_of_the_batch_scored(
    vllm_judge: object, data_dir: Path
) -> None:
    """vLLM rejects a whole batch for one prompt longer than the context: only it fails."""
    requests = outcome_requests(data_dir, "outcome-score-only", questions=1)
    long = JudgeRequest.from_template(
        get_template("outcome-score-only"), key="long", question="Q?", reference="R.",
        response="The answer is 4. " * 600,  # ~3,600 tokens; the context is 2,048
    )  # fmt: skip
    batch = [*requests[:2], long, *requests[2:]]
    results = judge_sync(vllm_judge, batch)  # type: ignore[arg-type]
    assert [r.key for r in results] == [r.key for r in batch]
    assert results[2].score is None
    assert results[2].reason is not None
    assert "maximum context length is 2048" in results[2].reason
    rest = [r for i, r in enumerate(results) if i != 2]
    assert all("context length" not in (r.reason or "") for r in rest)
    assert_own_words(rest)


def test_constrained_scores_are_the_judges_own_digits_over_http_and_in_process(
    vllm_judge: object, judge_server: VLLMServer, data_dir: Path
) -> None:
    """With structured outputs the 135M judge writes a digit every time (unconstrained it
    often writes "1-5" or "70000"): a score of its own choosing, never a rescue."""
    requests = outcome_requests(data_dir, "outcome-score-only", questions=2)
    served = OpenAIJudge(
        judge_server.model, base_url=judge_server.url, top_logprobs=20, prefill=True,
        constrain_scores=True,
    )  # fmt: skip
    local = vllm_judge
    local.constrain_scores = True  # type: ignore[attr-defined]
    try:
        for results in (judge_sync(served, requests), judge_sync(local, requests)):  # type: ignore[arg-type]
            assert_well_formed(results, requests)
            assert_own_words(results)
            assert all(r.scored for r in results)
            assert all(r.text[len("Score: ") :] in {"1", "2", "3", "4", "5"} for r in results)
            assert all(r.mass is not None and r.mass > 0.99 for r in results)
    finally:
        local.constrain_scores = False  # type: ignore[attr-defined]
    plain = OpenAIJudge(judge_server.model, base_url=judge_server.url, prefill=True)
    assert requests[0].cache_key("openai", "m", served.sampling()) != requests[0].cache_key(
        "openai", "m", plain.sampling()
    )


# Hand-written items for the domains the paper also trains on (code, science QA) and for
# proofs, each with a reference the judge grades against.
DOMAIN_ITEMS = {
    "code": (
        "Write a Python function `second_largest(xs)` that returns the second largest "
        "distinct value of a list of at least two distinct integers.",
        "def second_largest(xs):\n    return sorted(set(xs))[-2]",
        "I sort the list and take the element before the last.\n```python\n"
        "def second_largest(xs):\n    xs = sorted(xs)\n    return xs[-2]\n```",
    ),
    "science": (
        "A 2 kg ball falls freely from rest for 3 s. What is its speed? Use g = 9.8 m/s^2.",
        "v = g t = 9.8 * 3 = 29.4 m/s.",
        "Speed grows by 9.8 m/s each second, so after 3 s it is 29.4 m/s.",
    ),
    "proof": (
        "Prove that the square root of 2 is irrational.",
        "Suppose sqrt(2) = p/q in lowest terms. Then p^2 = 2 q^2, so p is even, p = 2r. Then "
        "q^2 = 2 r^2, so q is even too, contradicting lowest terms.",
        "Assume sqrt(2) = a/b with a, b coprime integers.\nSquaring, a^2 = 2 b^2, so a^2 is even.",
    ),
}


@pytest.mark.parametrize("name", ["code-outcome", "code-outcome-score-only", "science-outcome",
                                  "science-outcome-score-only", "proof-prefix",
                                  "proof-prefix-score-only"])  # fmt: skip
def test_domain_templates_render_and_a_real_judge_is_parsed(
    judge_server: VLLMServer, name: str
) -> None:
    template = get_template(name)
    question, reference, response = DOMAIN_ITEMS[name.split("-")[0]]
    steps = get_slicer("newline").split(response)
    requests = [
        JudgeRequest.from_template(
            template, key=f"{name}/{s.index}", question=question, reference=reference,
            response=response, step=s.text, previous=response[: s.start],
            step_index=s.index + 1, num_steps=len(steps), prefill=True,
        )
        for s in (steps if template.mode == "process-prefix" else steps[:1])
    ]  # fmt: skip
    judge = OpenAIJudge(judge_server.model, base_url=judge_server.url, top_logprobs=20,
                        max_tokens=48, prefill=True)  # fmt: skip
    results = judge_sync(judge, requests)
    assert_well_formed(results, requests)
    assert_own_words(results)
    assert all(r.text.startswith(template.prefill()) for r in results)


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A test run or trainer killed outright (SIGKILL: no finally, no atexit) leaves no
    vLLM server behind: Linux signals it when its parent dies."""
    import signal
    import subprocess
    import sys
    import time

    starter = (
        "import sys\n"
        "from exprl_rewards.judges.local_model import VLLMServer\n"
        f"server = VLLMServer(log_path={str(tmp_path / 'server.log')!r}).start()\n"
        "print(server._process.pid, flush=True)\n"
        "sys.stdin.read()\n"  # wait to be killed
    )
    with subprocess.Popen([sys.executable, "-c", starter], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as parent:  # fmt: skip
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        os.kill(pid, 0)  # the server runs
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for init counts as gone
            if f.read().split(")")[-1].split()[0] == "Z":
                break
        time.sleep(0.5)
    else:
        os.killpg(pid, signal.SIGKILL)  # leave nothing behind for the next tests
        pytest.fail("the server outlived the process that started it")
