"""TRL: a reward function for ``GRPOTrainer(reward_funcs=[...])``.

TRL calls ``f(prompts=..., completions=..., completion_ids=..., **columns)`` with every
dataset column (but ``prompt``) as a list, one entry per completion, plus
``trainer_state``, ``log_metric`` and ``log_extra``. It turns ``None`` into NaN and
leaves that completion out of its group's baseline, so an unscored completion is
``None`` here, never 0. A class instance (not a closure) pickles, and its ``__name__``
is what TRL logs (``rewards/<name>/mean``).

>>> from exprl_rewards.judges import OpenAIJudge
>>> from exprl_rewards.pipeline import RewardPipeline
>>> judge = OpenAIJudge("judge", base_url="http://127.0.0.1:8000/v1")
>>> reward = TRLReward(RewardPipeline(judge, mode="outcome"), reference_column="solution")
>>> reward.__name__
'exprl'

Process modes give one scalar per completion through the pipeline's ``reduce``:

==========  ==========================================  =============================
reduce      the completion's reward                     closest ExpRL variant
==========  ==========================================  =============================
``last``    the judge's score of the whole response     process-prefix's final value;
            (process-prefix: the full prefix)           the outcome reward
``mean``    the mean of its step scores                 process-segment (released)
                                                        averaged: sum of DeltaNorm
                                                        advantages is not it
``min``     its weakest step                            PRM-style "first error"
==========  ==========================================  =============================

Per-step advantages do not fit TRL's scalar API; the verl adapter's token-level
rewards carry them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError
from ..pipeline import BatchResult, RewardPipeline
from ..rollout import Rollout

__all__ = ["AsyncTRLReward", "TRLReward"]


def _text(value: Any, where: str) -> str:
    """A plain string, or the content of a conversation's last message."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and value and isinstance(value[-1], Mapping):
        content = value[-1].get("content")
        if isinstance(content, str):
            return content
    raise InputError(f"{where}: expected a string or a list of chat messages, got {value!r:.80}")


def _question(prompt: Any, where: str) -> str:
    """The prompt's text: a string, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if users and isinstance(users[-1].get("content"), str):
            return str(users[-1]["content"])
    raise InputError(f"{where}: cannot find the question in the prompt {prompt!r:.80}")


class _TRLBase:
    def __init__(
        self,
        pipeline: RewardPipeline,
        *,
        reference_column: str = "solution",
        question_column: str | None = None,
        name: str = "exprl",
    ) -> None:
        self.pipeline = pipeline
        self.reference_column, self.question_column = reference_column, question_column
        self.__name__ = name

    def rollouts(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Any]
    ) -> list[Rollout]:
        """The rollouts for one call: completions of the same prompt form a group."""
        if len(prompts) != len(completions):
            raise InputError(f"{len(prompts)} prompts but {len(completions)} completions")
        references = columns.get(self.reference_column)
        if references is None:
            raise InputError(
                f"the dataset has no {self.reference_column!r} column for the reference "
                f"solution (columns: {', '.join(sorted(columns)) or 'none'}); "
                "pass reference_column="
            )
        questions = columns.get(self.question_column) if self.question_column else None
        if self.question_column and questions is None:
            raise InputError(f"the dataset has no {self.question_column!r} column")
        out = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            where = f"completion {i}"
            question = str(questions[i]) if questions is not None else _question(prompt, where)
            reference = references[i]
            if not isinstance(reference, str):
                raise InputError(f"{where}: column {self.reference_column!r} is not a string")
            group = hashlib.sha256(repr(prompt).encode()).hexdigest()[:16]
            out.append(
                Rollout(
                    id=f"{group}:{i}",
                    group_id=group,
                    question=question,
                    reference=reference,
                    response=_text(completion, where),
                )
            )
        return out

    def finish(self, batch: BatchResult, columns: Mapping[str, Any]) -> list[float | None]:
        """The rewards, with the unscored count logged where TRL offers ``log_metric``."""
        rewards = [r.score for r in batch.results]
        log_metric = columns.get("log_metric")
        if callable(log_metric) and rewards:
            unscored = sum(r is None for r in rewards)
            log_metric(f"{self.__name__}/unscored_frac", unscored / len(rewards))
        return rewards


class TRLReward(_TRLBase):
    """A synchronous TRL reward function backed by a :class:`RewardPipeline`.

    Args:
        pipeline: the judge, mode, template and calibration to use.
        reference_column: the dataset column holding the hidden reference solution.
        question_column: the column holding the question; default: the prompt's text
            (its last user message when conversational).
        name: what TRL logs the reward as.

    Safe to call from inside a running event loop (it judges on a helper thread).
    """

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        batch = self.pipeline.score_sync(self.rollouts(prompts, completions, columns))
        return self.finish(batch, columns)


class AsyncTRLReward(_TRLBase):
    """The same as :class:`TRLReward` as a coroutine: TRL gathers async rewards together."""

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        batch = await self.pipeline.score(self.rollouts(prompts, completions, columns))
        return self.finish(batch, columns)
