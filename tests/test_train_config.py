"""The trainer's config file and its CLI, without torch or vLLM."""

from __future__ import annotations

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
