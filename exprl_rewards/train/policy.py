"""The policy in torch: log-probs of sampled tokens with gradients, and the frozen reference.

Sequences are ``prompt + response`` token ids, right-padded into one ``[B, L]`` batch;
the response token at position ``t`` is predicted by the logits at ``t - 1``. Only
response tokens are returned: ``[B, T]`` with ``T`` the longest response of the
micro-batch, and a mask for the padding.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .loss import token_entropy, token_logprobs

__all__ = ["Batch", "Policy"]


class Batch:
    """Right-padded ``prompt + response`` ids of some rollouts, and where responses sit."""

    def __init__(
        self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]
    ) -> None:
        lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
        width = max(lengths)
        self.T = max(len(r) for r in responses)
        self.input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
        self.attention = torch.zeros(len(lengths), width, dtype=torch.long)
        # index of the logit predicting response token t, per row; padded rows repeat 0
        self.positions = torch.zeros(len(lengths), self.T, dtype=torch.long)
        self.tokens = torch.zeros(len(lengths), self.T, dtype=torch.long)
        self.mask = torch.zeros(len(lengths), self.T, dtype=torch.bool)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            ids = list(p) + list(r)
            self.input_ids[i, : len(ids)] = torch.tensor(ids)
            self.attention[i, : len(ids)] = 1
            n = len(r)
            self.positions[i, :n] = torch.arange(len(p) - 1, len(p) - 1 + n)
            self.tokens[i, :n] = torch.tensor(list(r), dtype=torch.long)
            self.mask[i, :n] = True


class Policy:
    """A causal LM to train, and (optionally) a frozen copy of its start as the reference.

    Log-probs are those of the distribution sampled from: the logits divided by the
    sampling ``temperature`` (as the sampler's ``processed_logprobs`` are), so the
    importance ratios compare like with like and the gradient is that of the sampling
    policy (verl does the same).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        reference: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM

        torch_dtype = getattr(torch, dtype)
        # use_kernels=False: transformers >= 5.25 turns hub kernels on by default and fails
        # without the `kernels` package (not on the registry); 5.19, which vLLM pins, ignores it
        self.model: Any = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch_dtype, use_kernels=False
        )
        if gradient_checkpointing:  # activations recomputed in backward: no KV cache to keep
            self.model.config.use_cache = False
            self.model.gradient_checkpointing_enable()
        self.model.train()
        self.reference: Any = None
        if reference:
            self.reference = copy.deepcopy(self.model)
            self.reference.eval()
            self.reference.requires_grad_(False)

    def _gather(
        self, model: Any, batch: Batch, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(batch.input_ids.shape[0]).unsqueeze(-1)
        trunk, head = model.base_model, model.get_output_embeddings()
        if trunk is model or head is None or getattr(model.config, "final_logit_softcapping", None):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention).logits
            picked = logits[rows, batch.positions]  # [B, T, V]
        else:  # the vocabulary projection of the response positions only, not the prompt's
            hidden = trunk(input_ids=batch.input_ids, attention_mask=batch.attention)
            picked = head(hidden.last_hidden_state[rows, batch.positions])  # [B, T, V]
        picked = picked / temperature
        return token_logprobs(picked, batch.tokens), token_entropy(picked)

    def logprobs(self, batch: Batch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's log-probs of the response tokens (with gradient) and entropies."""
        return self._gather(self.model, batch, temperature)

    @torch.no_grad()
    def reference_logprobs(self, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
        """The frozen reference policy's log-probs of the response tokens."""
        if self.reference is None:
            raise RuntimeError("this policy was built without a reference copy")
        return self._gather(self.reference, batch, temperature)[0]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's weights under their Hugging Face names (what the sampler loads)."""
        return dict(self.model.state_dict())
