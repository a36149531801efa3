"""Trainer adapters: TRL reward functions, verl ``compute_score`` and token rewards,
OpenRLHF's remote reward protocol and in-process ``reward_func``, a verifiers judge.

The OpenRLHF server is :mod:`exprl_rewards.serve` (its request and answer shapes are in
:mod:`.openrlhf`; :mod:`.openrlhf_func` is the in-process form). None of these import
their trainer: they speak its data shapes. The exceptions, which their trainer loads and
nothing here imports: :mod:`.verl_process` (verl's process reward manager, agent-loop
manager and advantage estimators) and :mod:`.verifiers_judge` (the verifiers plugin,
id ``exprl-judge``).
"""

from __future__ import annotations

from .common import UnscoredPolicy, fill_unscored
from .messages import ends_in_tool_call, render_messages
from .trl import AsyncTRLReward, TRLReward
from .trl_env import JudgedEnvironment
from .verl import VerlReward, compute_score, compute_score_batch, compute_score_sync, token_offsets

__all__ = [
    "TESTED",
    "AsyncTRLReward",
    "JudgedEnvironment",
    "TRLReward",
    "UnscoredPolicy",
    "VerlReward",
    "compute_score",
    "compute_score_batch",
    "compute_score_sync",
    "ends_in_tool_call",
    "fill_unscored",
    "render_messages",
    "token_offsets",
]

# The trainer releases the adapters are tested with, driven through their own code
# (``make test`` installs exactly these; a test checks that the installed ones match).
# verifiers 0.4.0 is tested in its own environment (it needs openai<3).
TESTED: dict[str, str] = {"openrlhf": "0.11.2", "trl": "1.16.0", "verl": "0.9.1"}
