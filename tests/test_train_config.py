"""The trainer's config file and its CLI, without torch or vLLM."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from exprl_rewards.errors import ConfigError
from exprl_rewards.train import PRESETS, load_config
from exprl_rewards.train.config import TrainConfig


def test_defaults_are_the_released_hyperparameters():
    c = TrainConfig()
    assert (c.optim.lr, c.optim.clip_low, c.optim.clip_high) == (1e-6, 0.2, 0.28)
    assert (c.optim.kl_coef, c.optim.epochs) == (0.001, 1)
    assert (c.sampler.temperature, c.sampler.prompts_per_step) == (0.8, 36)
    assert c.sampler.max_tokens == 16384


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate(name):
    assert load_config(name).preset == name


def test_a_file_overrides_its_preset(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "cpu-tiny"\n[optim]\nlr = 3e-5\n[run]\nstage = "II"\n')
    c = load_config(path)
    assert (c.optim.lr, c.run.stage, c.sampler.rollouts_per_prompt) == (3e-5, "II", 4)
    assert c.optim.clip_high == 0.28  # untouched keys keep the preset's or the default


@pytest.mark.parametrize(("text", "message"), [
    ("[optim]\nclip_hgh = 0.3\n", "optim.clip_hgh: Extra inputs are not permitted"),
    ("[sampler]\ntemperature = -1\n", "sampler.temperature: Input should be greater than 0"),
    ("[judge]\nmode = 'proces'\n", "judge.mode: Input should be"),
    ("[optimizer]\nlr = 1\n", "optimizer: Extra inputs are not permitted"),
    ("[sampler]\nmax_tokens = 4096\nmax_model_len = 2048\n", "must leave room for the prompt"),
    ("preset = 'cpu-huge'\n", "preset: unknown 'cpu-huge'"),
    ("[optim\n", "not valid TOML"),
])  # fmt: skip
def test_bad_configs_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value)
    assert message in str(e.value)


def test_help_and_config_errors_need_neither_torch_nor_vllm(tmp_path):
    code = (
        "import sys\n"
        "from exprl_rewards.train.__main__ import main, parse_args\n"
        "parse_args(['cpu-tiny'])\n"
        f"assert main(['{tmp_path / 'missing.toml'}']) == 2\n"
        "heavy = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    out = subprocess.run(
        [sys.executable, "-m", "exprl_rewards.train", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "Stage II" in out.stdout
    assert "cpu-tiny" in out.stdout


@pytest.mark.parametrize(("text", "message"), [
    ("[optim]\nlr = inf\n", "optim.lr: Input should be a finite number"),
    ("[sampler]\ntemperature = inf\n", "sampler.temperature: Input should be a finite number"),
    ("[optim]\nkl_coef = nan\n", "optim.kl_coef: Input should be a finite number"),
    ("[optim]\nmax_grad_norm = inf\n", "optim.max_grad_norm: Input should be a finite number"),
    ("[optim]\nbetas = [1.5, 2]\n", "optim.betas.0: Input should be less than 1"),
    ("[optim]\nclip_low = 5\n", "optim.clip_low: Input should be less than 1"),
    ("[run]\nseed = -1\n", "run.seed: Input should be greater than or equal to 0"),
    ("[run]\nsteps = true\n", "run.steps: Input should be a valid integer"),
    ("[run]\nsteps = \"3\"\n", "run.steps: Input should be a valid integer"),
    ("[judge]\nslicer = \"newlines\"\n", "judge.slicer: unknown 'newlines'; known: exprl"),
    ("[judge]\nestimator = \"deltanorm\"\n", "judge.estimator: unknown 'deltanorm'; known: delta"),
    ("[judge]\ntemplate = \"outcome-scoreonly\"\n", "neither a built-in"),
    ("[judge]\nprm = \"/m\"\n", 'set judge.mode = "process-tagged", not \'outcome\''),
    ("[judge]\nprm = \"/m\"\nmode = \"process-tagged\"\nbase_url = [\"http://h/v1\"]\n",
     "each name a judge"),
])  # fmt: skip
def test_out_of_range_and_coerced_values_are_refused(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b"[run]\nsteps = 3 # caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def _run_folder(tmp_path, metrics: str, *, lr: float = 1e-5) -> TrainConfig:
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    config = load_config("cpu-tiny").override({"run": {"out": str(out)}, "optim": {"lr": lr}})
    (out / "config.json").write_text(config.model_dump_json())
    (out / "metrics.jsonl").write_text(metrics)
    return config


def test_a_used_run_folder_needs_resume_and_the_same_config(tmp_path):
    from exprl_rewards.train.resume import check_run_folder

    config = _run_folder(tmp_path, '{"step": 1}\n{"step": 2}\n')
    with pytest.raises(ConfigError, match=r"holds a run \(2 metrics rows\): pass --resume"):
        check_run_folder(config, resume=False)
    check_run_folder(config, resume=True)
    check_run_folder(config.override({"run": {"steps": 60}}), resume=True)  # may grow
    for change in ({"optim": {"lr": 0.5}}, {"run": {"seed": 3}}, {"run": {"stage": "II"}}):
        with pytest.raises(ConfigError, match="was run with another config"):
            check_run_folder(config.override(change), resume=True)


def test_resume_before_the_first_checkpoint_redoes_the_logged_steps(tmp_path):
    from exprl_rewards.train.resume import drop_rows_after

    config = _run_folder(tmp_path, '{"step": 1}\n{"step": 2}\n{"step": 3, "rew')  # cut off
    log = config.run.out / "metrics.jsonl"
    drop_rows_after(log, 2)  # a checkpoint at step 2; the cut-off row is no crash
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
    drop_rows_after(log, 0)  # no checkpoint: steps restart at 1, so no row stays
    assert log.read_text() == ""
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ConfigError, match=r"metrics\.jsonl:2: not a JSON row"):
        drop_rows_after(log, 5)


def test_the_cli_refuses_a_used_folder_without_resume(tmp_path):
    config = _run_folder(tmp_path, '{"step": 1}\n')
    result = subprocess.run(
        [sys.executable, "-m", "exprl_rewards.train", "cpu-tiny", "--out", str(config.run.out),
         "--lr", "1e-5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "pass --resume" in result.stderr
    assert (config.run.out / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_a_prm_judge_in_the_trainer_scores_every_step_in_one_pass(tmp_path):
    """judge.prm: the trainer's Stage I pipeline is the PRM's, no judge server started
    (the embedded SmolLM2 stands in; it is not a PRM)."""
    from contextlib import ExitStack

    from exprl_rewards import Rollout
    from exprl_rewards.judges.local_model import default_model_dir
    from exprl_rewards.train.loop import make_judge

    path = tmp_path / "run.toml"
    path.write_text(f'preset = "cpu-tiny"\n[judge]\nprm = "{default_model_dir()}"\n'
                    'prm_convention = "shepherd"\nmode = "process-tagged"\n')  # fmt: skip
    config = load_config(path)
    with ExitStack() as stack:
        pipeline = make_judge(config, str(default_model_dir()), stack)
    assert pipeline is not None
    assert pipeline.judge.backend == "prm"
    rollout = Rollout(id="a", group_id="g", question="1+1?", reference="2",
                      response="1 + 1 = 2.\nSo the answer is 2.")  # fmt: skip
    (result,) = pipeline.score_sync([rollout]).results
    assert len(result.segments) == 2
    assert all(s.score is not None for s in result.segments)
    assert pipeline.judge.forwards == 1
