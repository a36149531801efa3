"""The verl adapter in verl 0.9.1's own reward loop: ``RewardLoopWorker`` (the class
verl's ``RewardLoopManager`` runs as Ray actors) loads the docs' reward file (docs/trainers/verl.md) through
``load_reward_manager``, scores a batch with ``compute_score_batch`` (one
``run_single`` task per sample, as in training) and the naive manager assembles
``rm_scores``. The judge is the fault server's deterministic one over real HTTP.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_server import FaultServer

from exprl_rewards.adapters.verl import shared_reward
from exprl_rewards.judges.local_model import default_model_dir

from conftest import readme_snippet

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager import NaiveRewardManager
    from verl.trainer.ppo.ray_trainer import compute_advantage  # the trainer's own
    from verl.utils.ray_utils import get_event_loop


def readme_reward_file(folder: Path) -> Path:
    """The docs' verl reward file, written into ``folder``."""
    _, code = readme_snippet("verl")
    path = folder / "exprl_verl_reward.py"
    path.write_text(code)
    return path


def config(reward_file: Path, **reward_kwargs: Any) -> Any:
    """The parts of verl's PPO config the reward loop reads, with the docs' keys."""
    return OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": str(default_model_dir()), "tokenizer_path": None}},
        "reward": {
            "custom_reward_function": {
                "path": str(reward_file), "name": "compute_score", "reward_kwargs": reward_kwargs,
            },
            "reward_manager": {"name": "naive", "source": "register",
                               "module": {"path": None, "name": None}},
            "reward_model": {"enable": False, "model_path": None},
            "sandbox_fusion": None,
        },
    })  # fmt: skip


def batch(responses: list[str], groups: list[int]) -> DataProto:
    """A batch shaped as verl's rollout makes it: left-padded prompts, right-padded responses."""
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    pad = tokenizer.pad_token_id or 0
    n, prompt_width, response_width = len(responses), 12, 32
    prompt_ids = torch.full((n, prompt_width), pad)
    response_ids = torch.full((n, response_width), pad)
    attention = torch.zeros((n, prompt_width + response_width), dtype=torch.long)
    for i, response in enumerate(responses):
        p = tokenizer(f"Question {groups[i]}?", add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"]
        prompt_ids[i, prompt_width - len(p) :] = torch.tensor(p)
        response_ids[i, : len(r)] = torch.tensor(r)
        attention[i, prompt_width - len(p) : prompt_width + len(r)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": attention},
        non_tensors={
            "data_source": np.array(["gsm8k"] * n, dtype=object),
            "reward_model": np.array([{"ground_truth": "4"}] * n, dtype=object),
            "extra_info": np.array(
                [{"solution": "reference", "question": f"Question {g}?", "index": g}
                 for g in groups], dtype=object,
            ),
        },
    )  # fmt: skip


def test_the_reward_loop_scores_a_batch_through_one_shared_micro_batched_judge(
    fault: FaultServer, tmp_path: Path
) -> None:
    reward_file = readme_reward_file(tmp_path)
    kwargs = {"base_url": fault.url, "model": "marks", "mode": "outcome", "top_logprobs": None}
    loop = get_event_loop()  # verl's managers take the thread's loop; closed below
    try:
        check_the_loop(loop, config(reward_file, **kwargs), kwargs)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def check_the_loop(loop: asyncio.AbstractEventLoop, cfg: Any, kwargs: dict[str, Any]) -> None:
    worker = RewardLoopWorker(cfg)
    assert isinstance(worker.reward_manager, NaiveRewardManager)
    assert worker.reward_manager.is_async_reward_score  # verl awaits it on its loop

    responses = ["4 [[score 5]]", "7 [[score 2]]", "6 [[score 4]]", "I give up [[score none]]"]
    data = batch(responses, groups=[0, 0, 1, 1])
    shared = shared_reward(kwargs)
    flushes = shared.flushes
    outputs = loop.run_until_complete(worker.compute_score_batch(data))
    assert shared.flushes == flushes + 1  # four run_single tasks, one judge batch

    scores = [o["reward_score"] for o in outputs]
    assert scores == [1.0, 0.25, 0.75, 0.75]  # the unscored one: its group's mean, flagged
    assert [o["reward_extra_info"]["exprl_unscored"] for o in outputs] == [0.0, 0.0, 0.0, 1.0]
    rm_scores = NaiveRewardManager.assemble_rm_scores(data, scores)
    assert rm_scores.shape == (4, 32)
    assert rm_scores.sum(dim=1).tolist() == scores  # one value, at the last response token


def test_process_rewards_through_the_reward_loop_and_verls_compute_advantage(
    fault: FaultServer,
) -> None:
    """ExpRL-Process in verl: our reward manager (loaded by verl with source=importlib)
    writes step scores into verl's reward matrix; our estimator, registered with
    register_adv_est, turns them into DeltaNorm advantages in verl's compute_advantage,
    equal to the library's own, token by token."""
    from exprl_rewards.adapters.verl_process import STEP_ZERO, ExpRLProcessRewardManager
    from exprl_rewards.rewards.advantages import process_advantages

    kwargs = {"base_url": fault.url, "model": "marks", "mode": "process-segment",
              "slicer": "newline", "top_logprobs": None}  # fmt: skip
    cfg = config(Path("unused.py"), **kwargs)
    cfg.reward.custom_reward_function.path = None
    cfg.reward.reward_manager = {
        "name": "ExpRLProcessRewardManager", "source": "importlib",
        "module": {"path": "pkg://exprl_rewards.adapters.verl_process", "name": None},
    }  # fmt: skip
    responses = [
        "a [[score 2]]\nb [[score 4]]",
        "a [[score 1]]\nb [[score 5]]\nc [[score 3]]",
        "a [[score 5]]\nb [[score none]]",
        "a [[score 3]]",
    ]
    steps = [[0.25, 0.75], [0.0, 1.0, 0.5], [None, None], [0.5]]  # (N - 1) / 4 per step
    data = batch(responses, groups=[0, 0, 1, 1])
    loop = get_event_loop()
    try:
        worker = RewardLoopWorker(cfg)
        assert isinstance(worker.reward_manager, ExpRLProcessRewardManager)
        outputs = loop.run_until_complete(worker.compute_score_batch(data))
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    scores = [o["reward_score"] for o in outputs]
    assert [o["reward_extra_info"]["exprl_unscored"] for o in outputs] == [0.0, 0.0, 1.0, 0.0]
    rm = ExpRLProcessRewardManager.assemble_rm_scores(data, scores)
    for row, expected in zip(rm.tolist(), steps, strict=True):
        written = [v for v in row if v != 0]
        if expected[0] is None:
            assert written == []  # unscored: no steps
        else:
            assert [0.0 if abs(v) < 1e3 * STEP_ZERO else v for v in written] == expected

    prompt_width = data.batch["prompts"].shape[1]
    data.batch["response_mask"] = data.batch["attention_mask"][:, prompt_width:]
    data.batch["token_level_rewards"] = rm
    data.non_tensor_batch["uid"] = np.array(["g0", "g0", "g1", "g1"], dtype=object)
    advantages = compute_advantage(data, adv_estimator="exprl_delta").batch["advantages"]

    expected = process_advantages([[np.nan if v is None else v for v in s] for s in steps])
    ends = [[e for e, _ in row.steps] for row in scores]  # the colocated path
    length = data.batch["response_mask"].sum(dim=1).tolist()
    for b, row in enumerate(advantages.tolist()):
        if not expected.mask[b]:
            assert not any(row)  # masked trajectory: no gradient
            continue
        start = 0
        for k, value in enumerate(expected.values.rows()[b].tolist()):
            stop = length[b] if k == len(ends[b]) - 1 else ends[b][k] + 1
            assert row[start:stop] == pytest.approx([value] * (stop - start), abs=1e-6)
            start = stop
        assert not any(row[length[b] :])  # padding


def test_canaries_ride_along_the_reward_loop_and_raise_the_alarm(
    fault: FaultServer, tmp_path: Path
) -> None:
    """``canary_share`` in reward_kwargs: the canaries are graded in the same judge batch
    and never returned to verl; every sample carries its batch's hack metrics. The fault
    judge gives canaries (no marks) 4, above the honest rollouts' mean: the alarm fires."""
    reward_file = readme_reward_file(tmp_path)
    kwargs = {"base_url": fault.url, "model": "marks", "mode": "outcome", "top_logprobs": None,
              "canary_share": 0.5, "alarm_window": 1, "guards": "none"}  # fmt: skip
    loop = get_event_loop()
    try:
        worker = RewardLoopWorker(config(reward_file, **kwargs))
        responses = ["4 [[score 5]]", "7 [[score 2]]", "6 [[score 4]]", "5 [[score 1]]"]
        before = fault.requests
        outputs = loop.run_until_complete(
            worker.compute_score_batch(batch(responses, [0, 0, 1, 1]))
        )
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert [o["reward_score"] for o in outputs] == [1.0, 0.25, 0.75, 0.0]  # honest only
    assert fault.requests - before == 4 + 2  # two canaries graded beside them
    extra = [o["reward_extra_info"] for o in outputs]
    assert all(e["exprl_canary_share"] == pytest.approx(2 / 6) for e in extra)
    assert all(e["exprl_honest_reward"] == 0.5 for e in extra)
    assert all(e["exprl_canary_reward"] == 0.75 for e in extra)
    assert all(e["exprl_hack_alarm"] == 1.0 for e in extra)
    assert shared_reward(kwargs).watch.alarm.fired_at == 0  # type: ignore[union-attr]


def test_on_the_streaming_path_an_unscored_response_gets_its_whole_groups_mean(
    fault: FaultServer, tmp_path: Path
) -> None:
    """verl's agent loop scores each response when its rollout finishes; here they arrive
    0.3 s apart (longer than batch_wait_s), one run_single each, through verl's real
    RewardLoopWorker and the docs' reward file. Scored responses are answered at
    once; the unscored one waits for its group and gets the whole group's mean (before:
    the neutral 0.5, as it was judged alone)."""
    reward_file = readme_reward_file(tmp_path)
    kwargs = {"base_url": fault.url, "model": "marks", "mode": "outcome", "top_logprobs": None,
              "group_size": 3, "group_wait_s": 30.0}  # fmt: skip
    responses = ["4 [[score none]]", "7 [[score 2]]", "6 [[score 5]]"]
    data = batch(responses, groups=[7, 7, 7])
    loop = get_event_loop()
    done_at: dict[int, float] = {}

    async def stream() -> list[dict[str, Any]]:
        worker = RewardLoopWorker(config(reward_file, **kwargs))
        start = loop.time()

        async def one(i: int) -> dict[str, Any]:
            await asyncio.sleep(0.3 * i)
            out = await worker.compute_score(data[i : i + 1])
            done_at[i] = loop.time() - start
            return out

        return await asyncio.gather(*(one(i) for i in range(3)))

    try:
        outputs = loop.run_until_complete(stream())
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert [o["reward_score"] for o in outputs] == [0.625, 0.25, 1.0]  # (0.25 + 1.0) / 2
    assert outputs[0]["reward_extra_info"]["exprl_unscored"] == 1.0
    assert done_at[1] < done_at[0]  # the scored one does not wait for its group
    assert done_at[0] >= 0.6  # the unscored one waits for the last to arrive (at 0.6 s)
    assert shared_reward(kwargs).groups.state() == {"in_flight": 0, "expired": 0}


def test_a_group_that_never_completes_is_filled_at_its_deadline(
    fault: FaultServer, tmp_path: Path
) -> None:
    reward_file = readme_reward_file(tmp_path)
    kwargs = {"base_url": fault.url, "model": "marks", "mode": "outcome", "top_logprobs": None,
              "group_size": 4, "group_wait_s": 0.5}  # fmt: skip
    data = batch(["4 [[score none]]", "7 [[score 4]]"], groups=[8, 8])
    loop = get_event_loop()
    try:
        worker = RewardLoopWorker(config(reward_file, **kwargs))
        outputs = loop.run_until_complete(worker.compute_score_batch(data))
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert [o["reward_score"] for o in outputs] == [0.75, 0.75]  # the one scored, not 0.5
    assert shared_reward(kwargs).groups.state()["expired"] == 1


def _serve_router(run_router: Any, *args: Any) -> None:
    warnings.simplefilter("ignore", DeprecationWarning)  # FastAPI's on_event, in verl
    run_router(*args)


def start_router(worker: str) -> tuple[str, Any]:
    """verl's own reward router (``NaiveRouter``, as its reward model manager starts it:
    a forked process) in front of ``worker``; its ``host:port``."""
    import multiprocessing
    import socket
    import time

    import httpx
    from verl.experimental.reward_loop.router.naive_router import run_router

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = multiprocessing.get_context("fork").Process(
        target=_serve_router, args=(run_router, "127.0.0.1", port, [worker]), daemon=True
    )
    process.start()
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return f"127.0.0.1:{port}", process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("verl's router did not start")


@pytest.mark.parametrize("models", [("marks",), ("marks", "other")])
def test_the_genrm_path_judges_through_verls_router(
    tmp_path: Path, models: tuple[str, ...]
) -> None:
    """reward_model.enable=True and no base_url: verl passes its router's address; the
    judge is the one model the router lists (before: ``ConfigError: no judge
    configured``). Two models behind it: an error that says to set the model."""
    from exprl_rewards.errors import ConfigError

    reward_file = readme_reward_file(tmp_path)
    kwargs = {"mode": "outcome", "top_logprobs": None}
    with FaultServer(models=models) as judge:
        address, router = start_router(judge.url.removesuffix("/v1"))
        cfg = config(reward_file, **kwargs)
        cfg.reward.reward_model.enable = True
        cfg.reward.reward_model.model_path = str(default_model_dir())
        loop = get_event_loop()
        try:
            worker = RewardLoopWorker(cfg, reward_router_address=address)
            data = batch(["4 [[score 5]]", "7 [[score 2]]"], groups=[0, 0])
            if len(models) > 1:
                with pytest.raises(ConfigError, match=r"set reward_kwargs\.model"):
                    loop.run_until_complete(worker.compute_score_batch(data))
                return
            outputs = loop.run_until_complete(worker.compute_score_batch(data))
        finally:
            loop.close()
            asyncio.set_event_loop(None)
            router.kill()
        assert judge.requests == 2  # through the router
    assert [o["reward_score"] for o in outputs] == [1.0, 0.25]


def test_verls_rate_limited_manager_with_the_recommended_concurrency(
    fault: FaultServer, tmp_path: Path
) -> None:
    """verl's ``rate_limited`` manager awaits compute_score under a semaphore of
    ``reward.max_concurrent`` (default 1: each sample its own judge batch). With
    ``max_concurrent`` at least the samples a worker gets, they meet in one micro-batch.
    (Its settings are process-wide in verl: the first manager fixes them.)"""
    reward_file = readme_reward_file(tmp_path)
    kwargs = {"base_url": fault.url, "model": "marks", "mode": "outcome", "top_logprobs": None,
              "batch_wait_s": 0.2}  # fmt: skip
    cfg = config(reward_file, **kwargs)
    cfg.reward.reward_manager.name = "rate_limited"
    cfg.reward.max_concurrent = 64
    cfg.reward.timeout = 600
    responses = [f"{i} [[score {1 + i % 5}]]" for i in range(8)]
    loop = get_event_loop()
    try:
        worker = RewardLoopWorker(cfg)
        assert type(worker.reward_manager).__name__ == "RateLimitedRewardManager"
        shared = shared_reward(kwargs)
        flushes = shared.flushes
        outputs = loop.run_until_complete(worker.compute_score_batch(batch(responses, [0] * 8)))
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert shared.flushes == flushes + 1  # 8 samples, one judge batch
    assert [o["reward_score"] for o in outputs] == [(i % 5) / 4 for i in range(8)]
    assert {tuple(sorted(o["reward_extra_info"])) for o in outputs} == {
        ("exprl_raw", "exprl_unscored", "score")
    }


def test_canaries_on_the_streaming_path_stay_a_share_of_all_samples(
    fault: FaultServer, tmp_path: Path
) -> None:
    """Judged as they arrive, one sample a micro-batch: canary_share 0.5 grades 2
    canaries beside 4 samples, not one canary for every micro-batch."""
    kwargs = {"base_url": fault.url, "model": "marks", "mode": "outcome", "top_logprobs": None,
              "canary_share": 0.5, "guards": "none", "batch_wait_s": 0.01}  # fmt: skip
    data = batch([f"{i} [[score 4]]" for i in range(4)], groups=[0, 0, 1, 1])
    loop = get_event_loop()
    try:
        worker = RewardLoopWorker(config(readme_reward_file(tmp_path), **kwargs))
        before = fault.requests
        for i in range(4):  # one at a time, as rollouts finish
            loop.run_until_complete(worker.compute_score(data[i : i + 1]))
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert fault.requests - before == 4 + 2
