"""The policy-gradient loss: PPO-clip, truncated importance weights, k3 KL, token mean.

All tensors are ``[batch, T]`` over response tokens, with ``mask`` true on the tokens
that train (a masked row is an unscored rollout: it contributes nothing).

- ``ratio = exp(logp - old_logp)``, with ``old_logp`` the trainer's own log-probs of the
  sampled tokens before this batch's first update (with one update per batch it is
  ``logp.detach()``: the ratio is 1 and its gradient is the REINFORCE gradient).
- PPO-clip, as released: ``-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)``.
- Truncated importance sampling: the sampler (vLLM) and the trainer (torch) compute
  slightly different probabilities for the same weights; each token's loss is weighted
  by ``min(exp(old_logp - sampler_logp), tis_cap)``, detached (as verl's TIS does).
- KL to the reference (base) policy as a loss term: k3 ``exp(ref - logp) - (ref - logp)
  - 1`` clamped to ``[-kl_clamp, kl_clamp]``, times ``kl_coef``.
- Token-mean aggregation: the sum over every unmasked token of the *batch*, divided by
  their number, so micro-batches accumulate to the same gradient as one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LossTerms", "kl_k3", "policy_loss", "token_entropy", "token_logprobs"]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of ``tokens`` ``[B, T]`` under ``logits`` ``[B, T, V]``.

    The picked logit minus the log-sum-exp: no ``[B, T, V]`` log-softmax is built (nor
    kept for the backward pass), only ``[B, T]`` results.
    """
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution, ``[B, T]`` (no gradient),
    one row at a time so that only one row's ``[T, V]`` softmax exists at once."""
    with torch.no_grad():
        rows = []
        for row in logits:
            logp = torch.log_softmax(row.float(), dim=-1)
            rows.append(-(logp.exp() * logp).sum(-1))
        return torch.stack(rows)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, clamp: float = 10.0) -> torch.Tensor:
    """Schulman's k3 estimate of KL(policy || reference) per token, clamped (verl's low_var_kl)."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)
    return (log_ratio.exp() - log_ratio - 1.0).clamp(-clamp, clamp)


@dataclass(frozen=True)
class LossTerms:
    """One micro-batch's loss (already divided by the batch's token count) and its sums.

    The ``*_sum`` fields are sums over the micro-batch's unmasked tokens; divide the
    batch's totals by its token count for the step's means.
    """

    loss: torch.Tensor
    pg_sum: float
    kl_sum: float
    clipped: int
    ratio_sum: float
    tis_sum: float
    tokens: int


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    batch_tokens: int,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    tis_cap: float | None = 2.0,
    kl_coef: float = 0.001,
    kl_clamp: float = 10.0,
) -> LossTerms:
    """The loss of one micro-batch, scaled for token-mean over the whole batch.

    Args:
        logp: the trainer's log-probs of the sampled tokens, with gradient.
        old_logp: the trainer's log-probs before this batch's first update (no gradient).
        sampler_logp: the sampler's log-probs of the same tokens (what was sampled from).
        ref_logp: the reference policy's log-probs, or None with ``kl_coef`` 0.
        advantages: one advantage per token (0 where masked).
        mask: true on trained tokens.
        batch_tokens: unmasked tokens in the whole batch (token-mean denominator).
    """
    m = mask.to(logp.dtype)
    adv = torch.where(mask, advantages, torch.zeros_like(advantages)).to(logp.dtype)
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    pg = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        tis = torch.exp((old_logp - sampler_logp).clamp(-20.0, 20.0))
        if tis_cap is not None:
            tis = tis.clamp(max=tis_cap)
    pg = pg * tis
    per_token = pg
    kl = torch.zeros_like(logp)
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs the reference policy's log-probs")
        kl = kl_k3(logp, ref_logp, kl_clamp)
        per_token = per_token + kl_coef * kl
    loss = (per_token * m).sum() / max(batch_tokens, 1)
    with torch.no_grad():
        active = (clipped < unclipped) & mask  # the clip bound is what the loss uses
        return LossTerms(
            loss=loss,
            pg_sum=float((pg * m).sum()),
            kl_sum=float((kl * m).sum()),
            clipped=int(active.sum()),
            ratio_sum=float((ratio * m).sum()),
            tis_sum=float((tis * m).sum()),
            tokens=int(mask.sum()),
        )
