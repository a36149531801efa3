"""Training and held-out prompts with hidden references, and the policy's prompt.

Tasks come from the checkout's ``data/references`` (GSM8K test, MATH-500): a seeded
shuffle, the first ``train_size`` to train on and the next ``eval_size`` held out. The
policy's prompt is the question and the instruction in the policy's chat template; the
reference never enters it (:func:`policy_prompt` checks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audit.datasets import default_data_dir
from ..errors import InputError
from ..text.answers import Dataset, gold_answer
from .config import DataConfig

__all__ = ["Task", "load_tasks", "policy_prompt"]

FILES: dict[Dataset, tuple[str, str, str]] = {  # file, question field, reference field
    "gsm8k": ("references/gsm8k_test.jsonl", "question", "answer"),
    "math500": ("references/math500_test.jsonl", "problem", "solution"),
}


@dataclass(frozen=True)
class Task:
    """One prompt: its question, the hidden human reference, and the gold final answer."""

    id: str
    question: str
    reference: str
    gold: str


def load_tasks(config: DataConfig, data_dir: Path | None = None) -> tuple[list[Task], list[Task]]:
    """The train and held-out tasks (disjoint), from a seeded shuffle of the dataset."""
    name, q_field, r_field = FILES[config.dataset]
    folder = data_dir or default_data_dir()
    if folder is None:
        raise InputError(
            "no data folder: run from a checkout of exprl-rewards (its data/), or set EXPRL_DATA"
        )
    path = folder / name
    tasks = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            row = json.loads(line)
            for field in (q_field, r_field):
                if not isinstance(row.get(field), str):
                    raise InputError(f"{path}:{n}: field {field!r} must be a string")
            reference = row[r_field]
            tasks.append(
                Task(f"{config.dataset}-{n}", row[q_field], reference,
                     gold_answer(reference, config.dataset))
            )  # fmt: skip
    need = config.train_size + config.eval_size
    if need > len(tasks):
        raise InputError(f"{path} has {len(tasks)} tasks; train + eval need {need}")
    order = np.random.default_rng(config.seed).permutation(len(tasks))
    picked = [tasks[i] for i in order[:need]]
    return picked[: config.train_size], picked[config.train_size :]


def policy_prompt(tokenizer: Any, task: Task, instruction: str) -> list[int]:
    """The policy's prompt ids: the question and the instruction as one user turn.

    Raises:
        AssertionError: if the reference solution appears in the prompt.
    """
    messages = [{"role": "user", "content": f"{task.question}\n\n{instruction}"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert task.reference.strip() not in text, f"task {task.id}: the reference leaked into a prompt"
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids
