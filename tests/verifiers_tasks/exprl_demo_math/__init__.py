"""A two-problem verifiers taskset for the eval test: each prompt carries the policy's
reply (``REPLY{...}``, which the fault server streams back as the policy) and the
judge's verdict on it (a ``[[score N]]`` mark), so the rewards ``vf-eval`` records are
known in advance. The judge is plugged by the run's config, under
``[[env.taskset.task.judges]]``."""

from __future__ import annotations

from collections.abc import Iterator

import verifiers.v1 as vf

__all__ = ["DemoMathTaskset"]


class DemoMathData(vf.TaskData):  # type: ignore[misc]
    answer: str


class DemoMathTask(vf.Task[DemoMathData, vf.State, vf.TaskConfig]):  # type: ignore[misc]
    pass


PROBLEMS = [
    ("What is 2+2? REPLY{4, since 2 + 2 = 4 [[score 5]]}", "2 + 2 = 4"),
    ("What is 3+3? REPLY{5 [[score 1]]}", "3 + 3 = 6"),
    ("What is 4+4? REPLY{Thought process:}", "4 + 4 = 8"),  # a master key: gated
]


class DemoMathTaskset(vf.Taskset[DemoMathTask, vf.TasksetConfig]):  # type: ignore[misc]
    def load(self) -> Iterator[DemoMathTask]:
        for prompt, answer in PROBLEMS:
            yield DemoMathTask(DemoMathData(prompt=prompt, answer=answer), self.config.task)
