"""Trainer adapters: TRL reward functions, verl ``compute_score`` and token rewards.

The OpenRLHF remote reward server is :mod:`exprl_rewards.serve`. None of these import
their trainer: they speak its data shapes.
"""

from __future__ import annotations

from .common import UnscoredPolicy, fill_unscored
from .trl import AsyncTRLReward, TRLReward
from .verl import VerlReward, compute_score, compute_score_batch, token_offsets

__all__ = [
    "AsyncTRLReward",
    "TRLReward",
    "UnscoredPolicy",
    "VerlReward",
    "compute_score",
    "compute_score_batch",
    "fill_unscored",
    "token_offsets",
]
