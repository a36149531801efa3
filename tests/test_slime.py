"""slime driven through its own rollout code: ``generate_and_rm_group`` and
``generate_and_rm`` (``slime.rollout.sglang_rollout``) with ``--custom-rm-path``
(``exprl_rewards.adapters.slime.rm``, with and without ``--group-rm``), and ``async_rm``
with ``--rm-type remote_rm --rm-url .../slime``; the rewards then go through slime's
``Sample.get_reward_value`` and its dynamic-sampling filter.

slime is not on the package registry and its code may not be committed here, so these
tests run where ``$SLIME_SRC`` names a checkout of THUDM/slime (``make test-slime``
builds it where one can be fetched) and are skipped otherwise; the server's ``/slime``
answers are tested without it. Generation is a custom generate function (slime's
``--custom-generate-function-path``) that returns fixed responses; the judge is the
fault server's deterministic one, or the real embedded judge served by vLLM.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.errors import JudgeUnavailable
from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.judges.local_model import VLLMServer, default_model_dir
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.serve import RewardServer

from conftest import gsm8k_prompts

RM = "exprl_rewards.adapters.slime.rm"
# each prompt's fixed responses, by sample index within the group
RESPONSES: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def slime() -> Any:
    """slime's rollout module, from ``$SLIME_SRC``."""
    if os.environ.get("SLIME_SRC"):
        sys.path.insert(0, os.environ["SLIME_SRC"])
    return pytest.importorskip(
        "slime.rollout.sglang_rollout",
        reason="slime is not on the registry: set SLIME_SRC to a THUDM/slime checkout",
    )


@pytest.fixture(autouse=True)
def judge_env(fault: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPRL_JUDGE_BASE_URL", fault.url)
    monkeypatch.setenv("EXPRL_JUDGE_MODEL", "marks")
    monkeypatch.setenv("EXPRL_JUDGE_MODE", "outcome")
    monkeypatch.setenv("EXPRL_GUARDS", "content-gate")
    monkeypatch.setenv("EXPRL_JUDGE_TOP_LOGPROBS", "0")  # the written digit: exact numbers
    monkeypatch.setenv("EXPRL_GROUP_WAIT_S", "20")


async def canned_generate(args: Any, sample: Any, sampling_params: dict[str, Any]) -> Any:
    """slime's ``--custom-generate-function-path``: the fixed response for the sample."""
    from slime.utils.types import Sample

    sample.response = RESPONSES[sample.prompt][sample.index % args.n_samples_per_prompt]
    sample.tokens = list(range(len(sample.response.split()) + 3))
    sample.response_length = len(sample.tokens) - 3
    sample.status = Sample.Status.COMPLETED
    return sample


def make_args(**overrides: Any) -> Namespace:
    """The arguments slime's rollout reads on this path, as its parser names them."""
    args = Namespace(
        hf_checkpoint=str(default_model_dir()), sglang_server_concurrency=8,
        rollout_num_engines=1, sglang_dp_size=None, rollout_temperature=1.0,
        rollout_top_p=1.0, rollout_top_k=-1, rollout_max_response_len=256, rollout_stop=None,
        rollout_stop_token_ids=None, rollout_skip_special_tokens=False,
        sglang_enable_deterministic_inference=False, partial_rollout=False,
        mask_offpolicy_in_partial_rollout=False, ci_test=False,
        custom_generate_function_path="test_slime.canned_generate", rollout_sample_hook_path=None,
        custom_rm_path=RM, rm_type=None, rm_url=None, group_rm=True, n_samples_per_prompt=4,
        reward_key=None,
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def rollout_groups(
    slime: Any, args: Namespace, prompts: dict[str, tuple[str, list[str]]]
) -> list[list[Any]]:
    """Every prompt's group through ``generate_and_rm_group``, concurrently, as slime's
    ``generate_rollout_async`` submits them."""
    from slime.utils.misc import SingletonMeta
    from slime.utils.types import Sample

    SingletonMeta._instances.pop(slime.GenerateState, None)  # a fresh state per run
    groups = []
    for g, (prompt, (label, responses)) in enumerate(prompts.items()):
        RESPONSES[prompt] = responses
        groups.append([Sample(group_index=g, index=g * args.n_samples_per_prompt + i,
                              prompt=prompt, label=label)
                       for i in range(args.n_samples_per_prompt)])  # fmt: skip

    async def run() -> list[list[Any]]:
        params = slime.GenerateState(args).sampling_params
        return list(await asyncio.gather(*(
            slime.generate_and_rm_group(args, group, params.copy()) for group in groups
        )))  # fmt: skip

    return asyncio.run(run())


TWO_PROMPTS = {
    "What is 2+2?": ("2 + 2 = 4", ["4 [[score 5]]", "5 [[score 2]]", "hm [[score none]]",
                                   "Solution:"]),
    "What is 3+3?": ("3 + 3 = 6", ["6 [[score 4]]", "6 [[score 4]]", "7 [[score 1]]",
                                   "6 [[score 5]]"]),
}  # fmt: skip


@pytest.mark.parametrize("group_rm", [True, False], ids=["group-rm", "per-sample"])
def test_rewards_through_slimes_rollout_fill_unscored_from_their_group(
    slime: Any, group_rm: bool
) -> None:
    """Both --custom-rm-path forms: scored samples get the judge's score (a response
    without content, the content gate's 0); an unscored one (no score in the judge's
    answer) is removed from the loss and gets its group's mean, which leaves the group's
    mean as it was."""
    from slime.rollout.filter_hub.dynamic_sampling_filters import check_reward_nonzero_std

    args = make_args(group_rm=group_rm)
    first, second = rollout_groups(slime, args, TWO_PROMPTS)
    assert [s.get_reward_value(args) for s in first] == pytest.approx([1.0, 0.25, 1.25 / 3, 0.0])
    assert [s.get_reward_value(args) for s in second] == [0.75, 0.75, 0.0, 1.0]
    assert [s.remove_sample for s in first] == [False, False, True, False]
    assert not any(s.remove_sample for s in second)
    meta = [s.metadata["exprl"] for s in first]
    assert [m["unscored"] for m in meta] == [False, False, True, False]
    assert meta[0]["raw"] == 5.0
    assert meta[2]["raw"] is None
    assert meta[2]["reason"]
    assert meta[3]["guards"] == ["content-gate"]
    assert check_reward_nonzero_std(args, first).keep  # slime's own filter reads them


def test_groups_judged_together_share_one_micro_batch(slime: Any) -> None:
    from exprl_rewards.adapters.environ import environment_reward

    reward = environment_reward()
    before = reward.flushes
    rollout_groups(slime, make_args(), TWO_PROMPTS)
    assert reward.flushes - before == 1  # two groups of four, one judge batch


def test_a_dead_judge_fails_slimes_rollout(
    slime: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EXPRL_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens
    monkeypatch.setenv("EXPRL_JUDGE_MODEL", "dead")
    # the content gate settles "Solution:" without a request: it is no sign of life
    with pytest.raises(JudgeUnavailable, match="answered none of 3"):
        rollout_groups(slime, make_args(), dict(list(TWO_PROMPTS.items())[:1]))
    assert "the judge never answered a sample" in caplog.text


def test_group_rm_refuses_several_samples_per_rollout(slime: Any) -> None:
    from exprl_rewards.adapters.slime import rm
    from exprl_rewards.errors import InputError

    with pytest.raises(InputError, match="drop --group-rm"):
        asyncio.run(rm(make_args(), [[object()], [object()]]))


@pytest.fixture(scope="module")
def server(fault: FaultServer) -> Iterator[RewardServer]:
    judge = OpenAIJudge("marks", base_url=fault.url, max_attempts=1, timeout=5)
    pipeline = RewardPipeline(judge, mode="outcome", guards=["content-gate"])
    with RewardServer(pipeline, port=0) as running:
        yield running


def test_slimes_remote_rm_reads_the_servers_score(slime: Any, server: RewardServer) -> None:
    """--rm-type remote_rm --rm-url http://HOST:PORT/slime --reward-key score."""
    args = make_args(group_rm=False, custom_rm_path=None, rm_type="remote_rm",
                     rm_url=server.url + "/slime", reward_key="score")  # fmt: skip
    (group,) = rollout_groups(
        slime, args, {"What is 5+5?": ("5 + 5 = 10", ["10 [[score 5]]", "11 [[score 2]]",
                                                      "hm [[score none]]", "10 [[score 4]]"])}
    )  # fmt: skip
    assert [s.get_reward_value(args) for s in group] == [1.0, 0.25, 0.5, 0.75]
    assert [s.reward["exprl_unscored"] for s in group] == [0, 0, 1, 0]


def post(server: RewardServer, body: Any) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(server.url + "/slime", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_slime_endpoint_answers_numbers_and_flags(server: RewardServer) -> None:
    chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    status, answer = post(server, {"prompt": chat, "response": "4 [[score 5]]<|im_end|>",
                                   "label": "2 + 2 = 4"})  # fmt: skip
    assert (status, answer) == (200, {"score": 1.0, "exprl_unscored": 0, "exprl_raw": 5.0})
    status, answer = post(server, {"prompt": [{"role": "user", "content": "2+2?"}],
                                   "response": "hm [[score none]]", "label": 4})  # fmt: skip
    assert (status, answer["score"], answer["exprl_unscored"]) == (200, 0.5, 1)
    status, answer = post(server, {"prompt": "2+2?", "response": "4", "label": ""})
    assert (status, answer["exprl_unscored"]) == (200, 1)  # no reference: never judged


@pytest.mark.parametrize(
    ("body", "message"),
    [({"prompt": "q", "response": "r"}, "'label' is missing"),
     ({"prompt": "q", "response": 4, "label": "x"}, "the response is int"),
     ({"prompt": {"a": 1}, "response": "r", "label": "x"}, "cannot find the question"),
     ({"prompt": "q", "response": "r", "label": float("nan")}, "not a finite number")],
)  # fmt: skip
def test_the_slime_endpoint_refuses_bad_samples_by_name(
    server: RewardServer, body: dict[str, Any], message: str
) -> None:
    status, answer = post(server, body)
    assert status == 400
    assert message in answer["error"]


def test_slime_with_the_real_judge(
    slime: Any, judge_server: VLLMServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded judge, served by vLLM, grades GSM8K answers through slime's rollout:
    every reward is the judge's own score (its raw digit kept), none made up."""
    monkeypatch.setenv("EXPRL_JUDGE_BASE_URL", judge_server.url)
    monkeypatch.setenv("EXPRL_JUDGE_MODEL", judge_server.model)
    monkeypatch.setenv("EXPRL_JUDGE_TEMPLATE", "outcome-score-only")
    monkeypatch.setenv("EXPRL_JUDGE_TOP_LOGPROBS", "20")
    monkeypatch.setenv("EXPRL_JUDGE_PREFILL", "1")
    monkeypatch.setenv("EXPRL_JUDGE_MAX_TOKENS", "8")
    rows = gsm8k_prompts(data_dir, 2)
    prompts = {
        r["prompt"][0]["content"]: (
            r["solution"],
            [r["solution"], "I am not sure.", r["solution"].split("####")[0], "The answer is 7."],
        )
        for r in rows
    }
    groups = rollout_groups(slime, make_args(), prompts)
    for group in groups:
        for sample in group:
            meta = sample.metadata["exprl"]
            assert 0.0 <= sample.reward <= 1.0
            assert meta["unscored"] or meta["raw"] is not None
            assert sample.remove_sample == meta["unscored"]
