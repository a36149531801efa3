"""The reference trainer for real: vLLM sampling and weight push, torch updates, the judge.

Every run is a subprocess (the sampler is an in-process vLLM engine; it stays out of the
test process). The judge is the session's real vLLM server.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("vllm")

TINY = """preset = "cpu-tiny"
[data]
train_size = 8
eval_size = 4
[sampler]
prompts_per_step = 2
rollouts_per_prompt = 3
max_tokens = 40
max_model_len = 512
[judge]
{judge}
top_logprobs = 20
cache = "{cache}"
truncated = "judge"
[optim]
micro_batch = 3
[run]
save_every = 1
eval_samples = 2
{run}"""


def write_config(
    tmp_path: Path, server, *, judge: str = "", run: str = "", name: str = "tiny"
) -> Path:
    """The tiny config judged by ``server`` (None: the trainer starts its own judge)."""
    path = tmp_path / f"{name}.toml"
    # One judge cache for every run of a test: a request judged once is answered the same
    # way again (a server's batched logprobs vary in the last digits between runs).
    cache = tmp_path / "judge.sqlite"
    if server is not None:
        judge = f'base_url = ["{server.url}"]\nmodel = "{server.model}"\n{judge}'
    path.write_text(TINY.format(judge=judge, run=run, cache=cache))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train(config: Path, out: Path, *args: str) -> list[dict]:
    command = [sys.executable, "-m", "exprl_rewards.train", str(config), "--out", str(out),
               "--no-progress", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_jsonl(out / "metrics.jsonl")


def test_weight_push_keeps_the_sampler_on_the_trainers_weights(tmp_path, judge_server):
    code = f"""
import json, torch
from exprl_rewards.train.config import load_config
from exprl_rewards.train.policy import Batch
from exprl_rewards.train.run import Run
config = load_config({str(write_config(tmp_path, judge_server))!r})
config = config.override({{"run": {{"stage": "II", "out": {str(tmp_path / "push")!r}}}}})
def gap(run, prompt, s):
    with torch.no_grad():
        logp, _ = run.policy.logprobs(Batch([prompt], [s.token_ids]), 1.0)
    return (logp[0] - torch.tensor(s.logprobs)).abs()
with Run(config) as run:
    prompt = run.prompts[0]
    before = run.sampler.sample([prompt], 1, seed=3, temperature=1.0)[0]
    gap_before = gap(run, prompt, before)
    with torch.no_grad():
        for p in run.policy.model.parameters():
            p.add_(torch.randn_like(p) * 2e-3)
    seconds = run.sampler.push(run.policy.state_dict())
    after = run.sampler.sample([prompt], 1, seed=3, temperature=1.0)[0]
    gap_after = gap(run, prompt, after)
    # the same prompt was cached under the old weights: its first token must be recomputed
    moved = abs(after.logprobs[0] - before.logprobs[0]) if after.token_ids[0] == before.token_ids[0] else None
print(json.dumps({{"before": float(gap_before.max()), "after": float(gap_after.max()),
                  "moved": moved, "push_s": seconds}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["before"] < 1e-3, got
    assert got["after"] < 1e-3, got
    assert got["moved"] is None or got["moved"] > 1e-3, got


def test_stage_one_steps_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path, judge_server):
    config = write_config(tmp_path, judge_server)
    whole = train(config, tmp_path / "whole", "--steps", "2")
    assert [r["step"] for r in whole] == [1, 2]
    first, second = whole
    assert first["kl"] < 1e-9  # the policy starts as the reference
    for row in whole:
        assert math.isfinite(row["loss"]), row
        assert row["logprob_gap_max"] < 1e-3, row
        assert row["trained_rollouts"] + row["unscored_rate"] * 6 <= 6
        assert {"time_sample", "time_judge", "time_train", "time_push"} <= set(row)
        groups = [row[k] for k in ("groups_all_zero", "groups_all_one", "groups_mixed")]
        assert sum(groups) == pytest.approx(1.0)  # the released trainer's group shares
    assert first["adv_abs_mean"] > 0  # logprob-weighted scores differ within a group
    assert first["hack/canary_share"] == pytest.approx(1 / 7)  # one canary beside 6 rollouts
    assert {"hack/honest_reward", "hack/alarm", "guard/content-gate"} <= set(first)
    assert second["kl"] > 0  # the update moved the policy away from the reference

    part = train(config, tmp_path / "part", "--steps", "1")
    with (tmp_path / "part" / "metrics.jsonl").open("a") as f:  # a step logged, then a crash
        f.write(json.dumps({"step": 2, "lost": True}) + "\n")
    with (tmp_path / "part" / "samples.jsonl").open("a") as f:
        f.write(json.dumps({"step": 2, "lost": True}) + "\n")
    resumed = train(config, tmp_path / "part", "--steps", "2", "--resume")
    assert [r["step"] for r in resumed] == [1, 2]  # the row past the checkpoint is gone
    assert "lost" not in resumed[1]
    samples = read_jsonl(tmp_path / "part" / "samples.jsonl")
    assert [r["step"] for r in samples] == [1, 1, 2, 2]  # log_samples = 2 a step
    assert samples == read_jsonl(tmp_path / "whole" / "samples.jsonl")
    for r in samples:  # the advantages' runs cover every token
        assert sum(n for n, _ in r["advantages"]) == r["tokens"] > 0
        assert r["response"]
    assert part[0]["reward_mean"] == first["reward_mean"]
    for key in (
        "reward_mean",
        "loss",
        "kl",
        "trained_tokens",
        "response_tokens_mean",
        "hack/canary_margin",
    ):  # the alarm's window goes on from the checkpoint
        assert resumed[1][key] == pytest.approx(second[key], rel=1e-5, abs=1e-9), key

    torch = pytest.importorskip("torch")
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["model"]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_stage_two_starts_from_stage_one_and_anchors_its_kl_there(tmp_path, judge_server):
    config = write_config(tmp_path, judge_server)
    one = train(config, tmp_path / "one", "--steps", "1", "--lr", "1e-3")
    assert one[0]["adv_abs_mean"] > 0  # a big step away from the base model
    assert one[0]["grad_norm"] > 0
    two = train(config, tmp_path / "two", "--stage", "II", "--init", str(tmp_path / "one"),
                "--steps", "1")  # fmt: skip
    assert two[0]["stage"] == "II"
    assert two[0]["kl"] < 1e-9  # the reference is Stage I's policy, not the base model
    assert "judge_prompt_tokens" not in two[0]  # Stage II checks answers, no judge
    solved = two[0]["reward_mean"] * 6  # 2 prompts x 3 rollouts, each 0 or 1
    assert abs(solved - round(solved)) < 1e-9


def test_process_advantages_give_steps_of_one_response_different_credit(tmp_path, judge_server):
    config = write_config(
        tmp_path, judge_server, judge='mode = "process-prefix"', run="log_samples = 6"
    )
    (row,) = train(config, tmp_path / "process", "--steps", "1")
    assert row["kl"] < 1e-9
    assert math.isfinite(row["loss"])
    samples = read_jsonl(tmp_path / "process" / "samples.jsonl")
    assert len(samples) == 6
    credits = [{v for _, v in r["advantages"] if v is not None} for r in samples]
    assert any(len(c) > 1 for c in credits), samples  # per-step credit within a response


def test_the_hack_alarm_stops_a_run_whose_judge_rewards_everything(tmp_path):
    """A real HTTP judge that gives 5 to everything, no guards: the canaries score as high
    as the honest rollouts at step 1, and ``watch.stop_on_alarm`` ends the run there."""
    from fault_server import FaultServer

    with FaultServer(default_score=5) as server:
        path = tmp_path / "fooled.toml"
        path.write_text(TINY.format(
            judge=f'base_url = ["{server.url}"]\nmodel = "judge"\nguards = "none"',
            cache=tmp_path / "judge.sqlite", run="",
        ) + "[watch]\ncanary_share = 0.5\nalarm_window = 1\nstop_on_alarm = true\n")  # fmt: skip
        out = tmp_path / "fooled"
        done = subprocess.run(
            [sys.executable, "-m", "exprl_rewards.train", str(path), "--out", str(out),
             "--no-progress", "--steps", "3"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    assert done.returncode == 4, done.stderr[-3000:]
    assert "hack alarm" in done.stderr
    (row,) = read_jsonl(out / "metrics.jsonl")  # stopped after the first step
    assert row["hack/alarm"] == 1.0
    # the same answer to every request: canaries and honest rollouts get the same reward
    assert row["hack/canary_reward"] == pytest.approx(row["hack/honest_reward"])
    assert row["hack/canary_reward"] > 0.5
    alarm = json.loads((out / "alarm.json").read_text())
    assert alarm["first_step"] == row["step"] == 1  # numbered as metrics.jsonl
    assert "at least the honest mean" in alarm["reasons"][0]


def test_eval_starts_no_judge(tmp_path, judge_server):
    path = write_config(tmp_path, None)  # no base_url: training would start a judge server
    done = subprocess.run(
        [sys.executable, "-m", "exprl_rewards.train", "eval", str(path), "--out",
         str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["step"] == 0
    assert result["samples_per_task"] == 2
    assert (tmp_path / "eval" / "eval-step0.json").exists()
    assert not (tmp_path / "eval" / "judge-server.log").exists()
