"""The trainer's configuration: one TOML file, validated, with the released defaults.

Every section rejects unknown keys, and an error names the key's path
(``optim.clip_hgh: Extra inputs are not permitted``). A file may start from a preset
(``preset = "cpu-tiny"``) and override any key. The defaults are the released ExpRL
hyperparameters (``METHOD.md``, "Optimisation, as released") where the paper sets them:

=============================  =====================  ==================================
key                            default                released
=============================  =====================  ==================================
``optim.lr``                   1e-6                   1e-6
``optim.clip_low/clip_high``   0.2 / 0.28             0.2 / 0.26-0.28
``optim.kl_coef``              0.001 (k3, +-10)       0.001, k3 ("low_var_kl")
``optim.epochs``               1 (on-policy)          one update per batch (process)
``sampler.temperature``        0.8                    0.8
``sampler.prompts_per_step``   36                     36
``sampler.rollouts_per_prompt`` 16                    10 (outcome) or 16 (process)
``sampler.max_tokens``         16384                  16384
=============================  =====================  ==================================

``cpu-tiny`` shrinks these to what a 2-core CPU runs in seconds a step (SmolLM2-135M as
policy and judge, 4 prompts x 4 rollouts, 160 tokens, lr 1e-5 so that 30 steps move
the policy). ``gpu-paper`` is the paper's setting (see docs/training.md's memory plan); it is
documented, not run here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..judges.templates import Mode

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the train extra installs tomli on Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["PRESETS", "TrainConfig", "load_config"]


class _Section(BaseModel):
    # strict: `steps = true` or `lr = "3"` is an error, not 1 or 3; no inf or NaN anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class PolicyConfig(_Section):
    """The policy: its weights, and the dtype the trainer holds them in."""

    model: str = Field("embedded", description="a model folder, or 'embedded' (SmolLM2-135M)")
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = Field(
        False,
        description="recompute the decoder's activations in the backward pass: about half"
        " the memory of a forward and backward pass, for ~0-8% more time (measured on CPU)",
    )


class DataConfig(_Section):
    """Prompts with hidden references: a GSM8K or MATH-500 JSONL of the checkout's data/."""

    dataset: Literal["gsm8k", "math500"] = "gsm8k"
    train_size: int = Field(64, ge=1)
    eval_size: int = Field(32, ge=1)
    seed: int = Field(0, ge=0)
    instruction: str = Field(
        "Solve the problem step by step, one step per line. "
        "End with the final answer as \\boxed{ANSWER}.",
        description="appended to each question in the policy prompt",
    )


class SamplerConfig(_Section):
    """On-policy sampling in an in-process vLLM engine."""

    prompts_per_step: int = Field(36, ge=1)
    rollouts_per_prompt: int = Field(16, ge=2)
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16384, ge=1)
    max_model_len: int = Field(20480, ge=64)
    block_size: int | None = Field(None, description="KV block; CPU needs a multiple of 32")
    kv_cache_gb: float = Field(1.0, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    gpu_memory_utilization: float = Field(0.35, gt=0, le=1)


class JudgeConfig(_Section):
    """The judge and the reward: Stage I grades against the reference; Stage II checks answers.

    With ``base_url`` unset, the trainer starts a vLLM server on 127.0.0.1 with the
    frozen base weights (the paper's choice: the base model judges); otherwise any
    OpenAI-compatible judge.
    """

    base_url: list[str] = Field(default_factory=list)
    model: str = "embedded"
    prm: Path | None = Field(
        None, description="a process reward model directory as the judge (mode process-tagged)"
    )
    prm_convention: Literal["qwen", "shepherd"] = "qwen"
    mode: Mode = "outcome"
    template: str | None = Field(None, description="default: the mode's score-only form")
    slicer: str = "newline"
    estimator: str | None = Field(None, description="process advantage; default: delta")
    truncated: Literal["zero", "judge", "unscored"] = Field(
        "zero", description="a response cut at max_tokens: reward 0 (released), judged, or unscored"
    )
    top_logprobs: int = Field(20, ge=0, le=20)
    cache: Path | None = Field(
        None, description="a judge cache (SQLite): identical requests are judged once"
    )
    concurrency: int = Field(16, ge=1)
    timeout: float = Field(120.0, gt=0)
    guards: str = Field(
        "content-gate,neutraliser",
        description="defences against responses that game the judge (exprl_rewards.judges.guards);"
        " 'none' turns them off",
    )

    @model_validator(mode="after")
    def _prm_needs_tagged(self) -> JudgeConfig:
        if self.prm is not None and self.mode != "process-tagged":
            raise ValueError(
                f"judge.prm scores every step in one pass: set judge.mode = "
                f'"process-tagged", not {self.mode!r}'
            )
        if self.prm is not None and self.base_url:
            raise ValueError("judge.prm and judge.base_url each name a judge; give one")
        return self


class WatchConfig(_Section):
    """Canaries and the hack alarm (:mod:`exprl_rewards.rewards.canaries`), Stage I only."""

    canary_share: float = Field(
        0.05, ge=0, le=1, description="canaries graded per honest rollout; 0: none"
    )
    alarm_window: int = Field(3, ge=1, description="steps pooled by each alarm comparison")
    alarm_rise: float = Field(
        0.05, gt=0, description="a judge-reward rise with no accuracy rise that is an alarm"
    )
    stop_on_alarm: bool = Field(False, description="end the run (exit 4) when the alarm fires")


class OptimConfig(_Section):
    """PPO-clip with token-mean aggregation, truncated importance weights, k3 KL, AdamW."""

    lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9,
        0.999,
    )
    clip_low: float = Field(0.2, ge=0, lt=1, description="the ratio's floor is 1 - clip_low")
    clip_high: float = Field(0.28, ge=0)
    tis_cap: float | None = Field(2.0, gt=0, description="truncated importance weight cap")
    kl_coef: float = Field(0.001, ge=0)
    kl_clamp: float = Field(10.0, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1, description="updates per batch (1: on-policy)")
    micro_batch: int = Field(4, ge=1, description="sequences per forward/backward")


class RunConfig(_Section):
    """What to run and where to write it."""

    stage: Literal["I", "II"] = "I"
    steps: int = Field(30, ge=1)
    seed: int = Field(0, ge=0, description="NumPy seeds must be non-negative")
    out: Path = Path("runs/train")
    save_every: int = Field(10, ge=1)
    eval_samples: int = Field(8, ge=1, description="samples per eval prompt (pass@k, k <= n)")
    log_samples: int = Field(
        2, ge=0, description="rollouts a step writes to samples.jsonl (text, reward, advantages)"
    )
    threads_bind: str | None = Field(
        "nobind", description="VLLM_CPU_OMP_THREADS_BIND for the in-process engine"
    )


class TrainConfig(_Section):
    """The whole run: ``policy``, ``data``, ``sampler``, ``judge``, ``optim``, ``run``,
    ``watch``."""

    preset: str | None = None
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        _check_names(self.judge)
        if self.sampler.max_tokens >= self.sampler.max_model_len:
            raise ValueError(
                f"sampler.max_tokens ({self.sampler.max_tokens}) must leave room for the "
                f"prompt within sampler.max_model_len ({self.sampler.max_model_len})"
            )
        return self

    def override(self, changes: dict[str, Any]) -> TrainConfig:
        """A validated copy with ``changes`` (``{"run": {"steps": 2}}``) merged in."""
        return config_from_dict(_merge(self.model_dump(), changes), where="overrides")


def _check_names(judge: JudgeConfig) -> None:
    """Slicer, estimator and template names, checked when the config loads, not at step 1."""
    from typing import get_args

    from ..judges.templates import TEMPLATES
    from ..rewards.advantages import ProcessEstimator
    from ..text.slicers import PRESETS as SLICERS

    if judge.slicer not in SLICERS:
        raise ValueError(f"judge.slicer: unknown {judge.slicer!r}; known: {', '.join(SLICERS)}")
    estimators = get_args(ProcessEstimator)
    if judge.estimator is not None and judge.estimator not in estimators:
        known = ", ".join(estimators)
        raise ValueError(f"judge.estimator: unknown {judge.estimator!r}; known: {known}")
    from ..errors import ConfigError
    from ..judges.guards import get_guards

    try:
        get_guards(judge.guards)
    except ConfigError as e:
        raise ValueError(f"judge.guards: {e}") from None
    template = judge.template
    if template is not None and template not in TEMPLATES and not Path(template).is_file():
        raise ValueError(
            f"judge.template: {template!r} is neither a built-in"
            f" ({', '.join(TEMPLATES)}) nor a template file"
        )


PRESETS: dict[str, dict[str, Any]] = {
    "cpu-tiny": {
        "data": {"train_size": 64, "eval_size": 16},
        "sampler": {
            "prompts_per_step": 4,
            "rollouts_per_prompt": 4,
            "max_tokens": 160,
            "max_model_len": 1024,
            "block_size": 32,
        },
        "judge": {"mode": "outcome", "concurrency": 16},
        "optim": {"lr": 1e-5, "micro_batch": 4},
        "run": {"steps": 30, "save_every": 10, "eval_samples": 4},
    },
    "gpu-paper": {
        "policy": {
            "model": "Qwen/Qwen3-4B-Instruct-2507",
            "dtype": "bfloat16",
            "gradient_checkpointing": True,
        },
        "data": {"dataset": "math500", "train_size": 400, "eval_size": 100},
        "sampler": {
            "prompts_per_step": 36,
            "rollouts_per_prompt": 16,
            "max_tokens": 16384,
            "max_model_len": 20480,
            "gpu_memory_utilization": 0.35,
        },
        "judge": {"model": "Qwen/Qwen3-4B-Instruct-2507", "mode": "process-prefix"},
        "optim": {"lr": 1e-6, "micro_batch": 1},
        "run": {"steps": 200, "save_every": 20, "eval_samples": 16, "threads_bind": None},
    },
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(raw: dict[str, Any], *, where: str = "config") -> TrainConfig:
    """Validate a config mapping (after applying its ``preset``), or raise ConfigError."""
    preset = raw.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"{where}: preset: unknown {preset!r}; known: {', '.join(PRESETS)}")
        raw = _merge(PRESETS[preset], raw)
    try:
        # JSON mode: strict about types, while TOML's arrays and strings still make tuples
        # and paths
        return TrainConfig.model_validate_json(json.dumps(raw, default=str))
    except ValidationError as e:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in e.errors()
        ]
        raise ConfigError(f"{where}: invalid training config:\n" + "\n".join(lines)) from None


def load_config(source: str | Path) -> TrainConfig:
    """Load a TOML file, or a preset name (``cpu-tiny``, ``gpu-paper``)."""
    if str(source) in PRESETS:
        return config_from_dict({"preset": str(source)}, where=str(source))
    path = Path(source)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read training config {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r});"
            " save the config as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return config_from_dict(raw, where=str(path))
