"""exprl-rewards: reference-guided LLM-judge rewards and dense advantages for RL (ExpRL).

The data flows one way::

    rollout -> slicer -> prompt -> judge -> parser -> calibration -> rewards
            -> advantages -> token broadcast -> trainer adapter

This package imports numpy and pydantic only; heavy backends (vLLM, torch) load lazily
from their own modules and name the ``pip install`` extra when missing.
"""

from __future__ import annotations

from .advantages import (
    OutcomeAdvantages,
    ProcessAdvantages,
    delta_norm,
    end_norm,
    group_norm,
    outcome_advantages,
    process_advantages,
    released_prefix,
    return_to_go,
)
from .alignment import segment_token_ranges, token_segment_ids
from .errors import AlignmentError, ConfigError, ExpRLError, InputError, MissingExtraError
from .kl import kl_penalty
from .ragged import Ragged
from .rollout import Rollout, Score, Segment, scores_to_array
from .slicers import PRESETS, RegexSlicer, Slicer, delimiter_slicer, get_slicer
from .tokens import TokenAdvantages, broadcast_to_tokens

__version__ = "0.1.0.dev0"

__all__ = [
    "PRESETS",
    "AlignmentError",
    "ConfigError",
    "ExpRLError",
    "InputError",
    "MissingExtraError",
    "OutcomeAdvantages",
    "ProcessAdvantages",
    "Ragged",
    "RegexSlicer",
    "Rollout",
    "Score",
    "Segment",
    "Slicer",
    "TokenAdvantages",
    "__version__",
    "broadcast_to_tokens",
    "delimiter_slicer",
    "delta_norm",
    "end_norm",
    "get_slicer",
    "group_norm",
    "kl_penalty",
    "outcome_advantages",
    "process_advantages",
    "released_prefix",
    "return_to_go",
    "scores_to_array",
    "segment_token_ranges",
    "token_segment_ids",
]
