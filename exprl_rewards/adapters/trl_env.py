"""TRL environments whose reward is the judge's: ``GRPOTrainer(environment_factory=...)``.

TRL 1.16 calls ``reset(**example)`` on an environment before each rollout, offers the
environment's public methods to the policy as tools, and, when the environment defines
``get_reward``, awaits it once per finished rollout, one environment after another, as
an extra reward column (weight 1, logged under the class's name).
:class:`JudgedEnvironment` is a base for such environments:

- ``reset`` keeps the example's question (``question_column``, else the prompt's last
  user message) and reference (``reference_column``) and starts a new episode;
- ``submit_answer(answer)`` is the tool the policy answers with; a subclass adds its own
  tools and puts what the judge should see of them on the episode with ``self._note``;
- ``get_reward`` grades the episode (the notes, then the submitted answer) against the
  reference. TRL awaits the environments one at a time, so the first call grades every
  episode finished since the last batch in **one judge batch**, grouped by question,
  and the other calls return their stored verdict;
- an unscored episode's reward is ``None``, which TRL turns into NaN and leaves out.

::

    class MathEnv(JudgedEnvironment):
        pipeline = RewardPipeline(OpenAIJudge("judge", base_url=URL), mode="outcome")

    trainer = GRPOTrainer(model=..., environment_factory=MathEnv, train_dataset=dataset, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import ConfigError, InputError
from ..rewards.pipeline import RewardPipeline
from ..text.rollout import Rollout
from .common import check_answered
from .messages import prompt_question

__all__ = ["JudgedEnvironment"]


def _question(example: Mapping[str, Any], column: str | None) -> str:
    if column is not None:
        return str(example[column])
    return prompt_question(example.get("prompt"), "the example's prompt")


class JudgedEnvironment:
    """A TRL environment graded by a :class:`~exprl_rewards.RewardPipeline` (see the
    module docs). Set ``pipeline`` (and the column names) on a subclass."""

    pipeline: ClassVar[RewardPipeline | None] = None
    reference_column: ClassVar[str] = "solution"
    question_column: ClassVar[str | None] = None
    _finished: ClassVar[list[JudgedEnvironment]]  # per subclass: episodes not graded yet
    _judged_batches: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._finished, cls._judged_batches = [], 0

    def reset(self, **example: Any) -> None:
        if type(self).pipeline is None:
            raise ConfigError(f"{type(self).__name__}.pipeline is not set")
        reference = example.get(self.reference_column)
        if not isinstance(reference, str):
            raise InputError(
                f"the example has no text column {self.reference_column!r} for the reference "
                f"(columns: {', '.join(sorted(example))}); set reference_column"
            )
        self._reference, self._question = reference, _question(example, self.question_column)
        self._notes: list[str] = []
        self._answer: str | None = None
        self._verdict: tuple[float | None] | None = None
        type(self)._finished.append(self)

    def submit_answer(self, answer: str) -> str:
        """Submit your final answer to the problem, with the working that leads to it.

        Args:
            answer: the final answer and its working.
        """
        self._answer = answer
        return "Answer received."

    def _note(self, text: str) -> None:
        """Put ``text`` on the episode: the judge sees it before the answer."""
        self._notes.append(text)

    def _response(self) -> str:
        parts = [*self._notes, *([self._answer] if self._answer is not None else [])]
        return "\n".join(parts)

    async def get_reward(self) -> float | None:
        """The judge's verdict on this episode (None: unscored)."""
        cls = type(self)
        if self._verdict is None:
            batch, cls._finished = [e for e in cls._finished if e._verdict is None], []
            rollouts = [
                Rollout(id=str(i), group_id=e._question, question=e._question,
                        reference=e._reference, response=e._response())
                for i, e in enumerate(batch)
            ]  # fmt: skip
            if cls.pipeline is None:
                raise ConfigError(f"{cls.__name__}.pipeline is not set")
            results = (await cls.pipeline.score(rollouts)).results
            check_answered(results, "TRL")
            cls._judged_batches += 1
            for e, r in zip(batch, results, strict=True):
                e._verdict = (r.score,)
        assert self._verdict is not None
        return self._verdict[0]
