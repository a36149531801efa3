"""OpenRLHF's multi-turn path: an agent instance whose episode reward is the judge's.

With ``--train.agent_func_path agent.py`` OpenRLHF 0.11 takes rewards from the agent,
not from ``--reward.remote_url``: its ``MultiTurnAgentExecutor`` makes one instance per
prompt, calls ``reset({"observation": prompt, "label": label})``, then, after every
generated action, ``step(states)``, summing the ``rewards`` tensors it returns until
``done``. :class:`JudgedAgentInstance` is a base for such agents:

- ``environment(action, states)`` is the environment's turn (override it): the
  feedback text to append and whether the episode is over; by default one action and
  done. ``max_turns`` ends an episode that never says it is done;
- the episode (every action and feedback after the prompt) is graded once, when it ends,
  against the label's reference (labels as the reward server reads them); earlier steps
  are rewarded 0, so the episode's total is the judge's reward;
- the judge comes from the environment, as for the in-process ``reward_func``
  (:mod:`.environ`); the answer's numbers and flags (``exprl_unscored``...) are the
  server's, in ``extra_logs``; a judge that did not answer raises, so the rollout fails
  loudly instead of training on a made-up reward.

An agent file for OpenRLHF::

    # agent.py -- --train.agent_func_path agent.py
    from openrlhf.utils.agent import MultiTurnAgentExecutor
    from exprl_rewards.adapters.openrlhf_agent import JudgedAgentInstance

    class AgentExecutor(MultiTurnAgentExecutor):
        def __init__(self):
            super().__init__(JudgedAgentInstance)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from openrlhf.utils.agent import AgentInstanceBase

from ..errors import JudgeUnavailable
from .environ import environment_reward
from .openrlhf import openrlhf_answer, openrlhf_batch

__all__ = ["JudgedAgentInstance"]


class JudgedAgentInstance(AgentInstanceBase):  # type: ignore[misc]
    """An OpenRLHF agent instance graded by the judge when its episode ends."""

    max_turns: ClassVar[int] = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.prompt, self.label, self.turns = "", None, 0

    async def reset(self, states: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.prompt, self.label, self.turns = states["observation"], states["label"], 0
        return states

    async def environment(self, action: str, states: dict[str, Any]) -> tuple[str, bool]:
        """The environment's turn after ``action``: feedback text and whether it is over."""
        return "", True

    async def step(self, states: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.turns += 1
        feedback, done = await self.environment(states["action_text"], states)
        done = done or self.turns >= self.max_turns
        reward, logs = 0.0, dict[str, float]()
        if done:
            episode = states["observation_text"] + states["action_text"] + feedback
            reward, logs = await self._judge(episode)
        return {
            "rewards": torch.tensor(reward), "scores": torch.tensor(reward),
            "environment_feedback": feedback, "done": done,
            "extra_logs": {key: torch.tensor(value) for key, value in logs.items()},
        }  # fmt: skip

    async def _judge(self, episode: str) -> tuple[float, dict[str, float]]:
        batch = openrlhf_batch({"query": [episode], "prompts": [self.prompt],
                                "labels": [self.label]})  # fmt: skip
        reward = environment_reward()
        results = [(await reward.result_one(r))[1] for r in batch.rollouts]
        if results and results[0].backend_failed:
            raise JudgeUnavailable(f"the judge did not answer an episode: {results[0].reason}")
        answer = openrlhf_answer(batch, results, reward.unscored, reward.neutral)
        logs = {key: values[0] for key, values in answer["extra_logs"].items()}
        return float(answer["rewards"][0]), logs
