"""The thin reference trainer: ExpRL Stage I and Stage II on vLLM sampling and torch updates.

``python -m exprl_rewards.train CONFIG`` runs it (see :mod:`.config` for the file and
its presets). The pieces, in data-flow order:

- :mod:`.tasks`: prompts with hidden references, the policy prompt, pass@k;
- :mod:`.sampler`: vLLM in-process, sampled tokens with their log-probs, weight push;
- :mod:`.loop`: rewards from :class:`~exprl_rewards.RewardPipeline` (Stage I) or the
  answer checker :mod:`.answers` (Stage II), and the update;
- :mod:`.loss`: PPO-clip, truncated importance weights, k3 KL, token mean;
- :mod:`.policy`: the torch policy and its frozen reference;
- :mod:`.run`: the step loop, metrics, checkpoints, resume and eval.

Importing this package imports neither torch nor vLLM; :mod:`.config` and
:mod:`.answers` need neither.
"""

from __future__ import annotations

from .config import PRESETS, TrainConfig, load_config

__all__ = ["PRESETS", "TrainConfig", "load_config"]
