"""A training run: set-up, the step loop, metrics, checkpoints and resume, and eval.

``out/`` holds ``config.json`` (the validated config), ``metrics.jsonl`` (one row per
step), ``checkpoint.pt`` (policy, optimiser, step: written every ``run.save_every``
steps and at the end), ``eval-*.json`` and, once the hack alarm fires, ``alarm.json``
(its first step and reasons; with ``watch.stop_on_alarm`` the run ends there). Every
random choice is derived from ``(run.seed, step)`` (the prompts of a step, each
rollout's sampling seed, its canaries), so a run resumed from a checkpoint takes the
same next step as one that was never interrupted; metrics rows of steps after the
checkpoint (logged before a crash) are dropped first.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..judges.local_model import default_model_dir
from ..rewards.metrics import pass_at_k
from ..text.answers import check_answer
from .config import TrainConfig
from .loop import (
    StepData,
    batch_metrics,
    make_judge,
    make_watch,
    reward_step,
    sample_rows,
    train_step,
)
from .policy import Policy
from .resume import LOGS, check_run_folder, drop_rows_after
from .sampler import Sampler
from .tasks import Task, load_tasks, policy_prompt

__all__ = ["Run"]


class Run:
    """Everything a run holds: tasks, tokenizer, policy, optimiser, sampler, judge.

    Use as a context manager (it owns the judge server); :meth:`train` runs the steps.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        init: Path | None = None,
        judge: bool = True,
    ) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.out = config.run.out
        check_run_folder(config, resume=resume)  # before any model loads
        self.out.mkdir(parents=True, exist_ok=True)
        self.model_dir = str(
            default_model_dir() if config.policy.model == "embedded" else config.policy.model
        )
        torch.manual_seed(config.run.seed)
        self.train_tasks, self.eval_tasks = load_tasks(config.data)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        instruction = config.data.instruction
        self.prompts = [policy_prompt(self.tokenizer, t, instruction) for t in self.train_tasks]
        self.policy = Policy(
            self.model_dir,
            dtype=config.policy.dtype,
            reference=config.optim.kl_coef > 0,
            gradient_checkpointing=config.policy.gradient_checkpointing,
        )
        o = config.optim
        self.optimizer = torch.optim.AdamW(
            self.policy.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
        )
        self.step = 0
        self._alarm_state: dict[str, Any] | None = None  # the hack alarm's, from a checkpoint
        if resume:  # before the first checkpoint, step 0: the logged steps are redone
            if self.checkpoint_path.exists():
                self._load(self.checkpoint_path)
            for log in LOGS:
                drop_rows_after(self.out / log, self.step)
        elif init is not None:  # Stage II from Stage I: the weights only, step 0
            source = init / "checkpoint.pt" if init.is_dir() else init
            weights = torch.load(source, weights_only=False)["model"]
            self.policy.model.load_state_dict(weights)
            if self.policy.reference is not None:  # the KL anchors to the run's start
                self.policy.reference.load_state_dict(weights)
        self._stack = ExitStack()
        self.sampler = Sampler(self.model_dir, config.sampler, dtype=config.policy.dtype,
                               threads_bind=config.run.threads_bind)  # fmt: skip
        if self.step or init is not None:
            self.sampler.push(self.policy.state_dict())
        # ``judge=False`` (eval only) starts no judge server
        self.pipeline = make_judge(config, self.model_dir, self._stack) if judge else None
        self.watch = make_watch(config, self.pipeline) if self.pipeline is not None else None
        if self.watch is not None and self._alarm_state is not None:
            self.watch.alarm.load_state_dict(self._alarm_state)  # a resumed run's windows
        (self.out / "config.json").write_text(config.model_dump_json(indent=2) + "\n")

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save(self) -> None:
        """Write the checkpoint atomically (a crash mid-write keeps the previous one)."""
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(
            {"step": self.step, "model": self.policy.model.state_dict(),
             "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "alarm": self.watch.alarm.state_dict() if self.watch is not None else None},
            tmp,
        )  # fmt: skip
        os.replace(tmp, self.checkpoint_path)

    def _load(self, path: Path) -> None:
        state = torch.load(path, weights_only=False)
        self.policy.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self._alarm_state = state.get("alarm")  # restored once the judge is set up

    def one_step(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Sample, reward, update and push once; the step's metrics row and sample rows."""
        c = self.config
        start = time.perf_counter()
        rng = np.random.default_rng([c.run.seed, self.step])
        k = min(c.sampler.prompts_per_step, len(self.train_tasks))
        picked = rng.choice(len(self.train_tasks), size=k, replace=False)
        tasks = [self.train_tasks[i] for i in picked]
        prompts = [self.prompts[i] for i in picked]
        t0 = time.perf_counter()
        samples = self.sampler.sample(prompts, c.sampler.rollouts_per_prompt,
                                      seed=c.run.seed * 100_003 + self.step)  # fmt: skip
        t1 = time.perf_counter()
        data: StepData = reward_step(c, self.step, tasks, prompts, samples, self.tokenizer,
                                     self.watch)  # fmt: skip
        t2 = time.perf_counter()
        update = train_step(c, self.policy, self.optimizer, data)
        t3 = time.perf_counter()
        push = self.sampler.push(self.policy.state_dict())
        self.step += 1
        row = {"step": self.step, "stage": c.run.stage, **batch_metrics(data), **update}
        row.update(
            time_sample=t1 - t0, time_judge=t2 - t1, time_train=t3 - t2, time_push=push,
            time_step=time.perf_counter() - start,
        )  # fmt: skip
        return row, sample_rows(data, self.step, c.run.log_samples)

    def train(self, steps: int | None = None, *, progress: bool = True) -> list[dict[str, Any]]:
        """Run up to ``steps`` more steps (default: to ``run.steps``); append metrics rows."""
        from tqdm import tqdm

        target = self.config.run.steps if steps is None else self.step + steps
        rows = []
        bar = tqdm(total=target, initial=self.step, disable=None if progress else True,
                   desc="train", unit="step")  # fmt: skip  # None: off when not a terminal
        with (
            (self.out / "metrics.jsonl").open("a", encoding="utf-8") as log,
            (self.out / "samples.jsonl").open("a", encoding="utf-8") as sample_log,
        ):
            while self.step < target:
                row, samples = self.one_step()
                rows.append(row)
                sample_log.writelines(json.dumps(r) + "\n" for r in samples)
                sample_log.flush()
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.update(1)
                bar.set_postfix(reward=row["reward_mean"], kl=row.get("kl"))
                alarm = self.watch.alarm if self.watch is not None else None
                if row.get("hack/alarm") and alarm is not None:
                    self._write_alarm(alarm.reasons)
                    if self.config.watch.stop_on_alarm:
                        self.save()
                        break
                if self.step % self.config.run.save_every == 0 or self.step == target:
                    self.save()
        bar.close()
        return rows

    @property
    def stopped_by_alarm(self) -> bool:
        """Whether the hack alarm fired and ``watch.stop_on_alarm`` ended the run."""
        return self.config.watch.stop_on_alarm and (self.out / "alarm.json").exists()

    def _write_alarm(self, reasons: list[str]) -> None:
        """``alarm.json``: the step the hack alarm first fired and every reason since."""
        assert self.watch is not None
        path = self.out / "alarm.json"
        first = self.watch.alarm.fired_at
        if path.exists():  # a resumed run keeps the first alarm of the whole run
            first = json.loads(path.read_text(encoding="utf-8")).get("first_step", first)
        path.write_text(json.dumps({"first_step": first, "reasons": reasons}, indent=2) + "\n")

    def evaluate(self, tasks: list[Task] | None = None, *, name: str = "eval") -> dict[str, Any]:
        """pass@1 and pass@k (unbiased) on the held-out tasks; written to ``eval-NAME.json``."""
        c = self.config
        tasks = self.eval_tasks if tasks is None else tasks
        n = c.run.eval_samples
        prompts = [policy_prompt(self.tokenizer, t, c.data.instruction) for t in tasks]
        samples = self.sampler.sample(prompts, n, seed=c.run.seed * 7919 + 1)
        correct = np.zeros(len(tasks), dtype=int)
        for s in samples:
            text = str(self.tokenizer.decode(list(s.token_ids), skip_special_tokens=True))
            correct[s.prompt_index] += int(check_answer(text, tasks[s.prompt_index].gold,
                                                        c.data.dataset))  # fmt: skip
        ks = sorted({1, *(k for k in (2, 4, 8, 16, 32, 64, 128) if k <= n)})
        result = {
            "step": self.step, "tasks": len(tasks), "samples_per_task": n,
            **{f"pass@{k}": float(np.mean([pass_at_k(n, int(ci), k) for ci in correct]))
               for k in ks},
            "solved_tasks": int((correct > 0).sum()),
        }  # fmt: skip
        (self.out / f"eval-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        return result
