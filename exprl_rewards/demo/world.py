"""The testbed's world: prompts with hidden references, a tabular policy, a simulated judge.

A *prompt* is a hidden reference: ``L`` content tokens (from a vocabulary of ``V``) and
then EOS. A rollout is correct when it reproduces the reference and stops: the sparse
reward. Rollouts are cut into steps of ``T`` tokens, the "reasoning steps" a process
judge grades.

The *policy* is tabular and autoregressive in the least it can be: per prompt, per
position, and per "still on the reference's path" flag, a row of logits over ``V``
content tokens, EOS and one extra *quirk* token. Its starting logits play the base model:
on the reference's path the right next token gets a prompt-specific bonus, chosen so that
the prompt is solved with a given starting probability ``p0``; prompts range from easy
(p0 ~ 0.2) to ones a random start almost never solves (p0 ~ 1e-4). Off the path, nothing
the policy does can matter to any score, as a reasoning chain that went wrong stays wrong.

The *judge* sees how far a (partial) rollout follows the reference, q in [0, 1] (tokens
matched before the first mistake, over ``L + 1``), and answers on the 1-5 scale:
``round(1 + 4 * q**gamma + bias * len / max_len + noise * eps)`` clipped to 1-5, and 5 for
anything containing the quirk token when the judge is exploitable (an injected "Score: 5").
The score is normalised as released, (N - 1) / 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..judges.parsing import normalize_score

__all__ = ["JudgeSim", "Policy", "Rollouts", "World"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_NORMALISED: FloatArray = np.array([normalize_score(n) for n in range(1, 6)])  # as released


@dataclass(frozen=True, kw_only=True)
class JudgeSim:
    """A judge that grades against the reference, with the flaws real ones have.

    Args:
        noise: standard deviation of the score's noise, in score points (1-5 scale).
        gamma: miscalibration, a monotone distortion ``q ** gamma`` of the true progress
            (1: calibrated; > 1: harsh on partial work; < 1: lenient).
        length_bias: score points added for a response as long as the length limit.
        exploitable: a rollout (or prefix) holding the quirk token scores 5.
        semantics: what a process step's score means. ``"prefix"``: the rollout so far
            against the whole reference (q above); ``"segment"``: the step alone against
            its part of the reference, the share of its tokens that match the reference
            at their place, as the released math judge sees one step and the reference
            (a step after a mistake can be right; a step with the quirk scores 5 when
            exploitable). Outcome scores are the whole rollout's either way.
    """

    noise: float = 0.5
    gamma: float = 1.0
    length_bias: float = 0.0
    exploitable: bool = False
    semantics: Literal["prefix", "segment"] = "prefix"

    def score(
        self, progress: FloatArray, length: FloatArray, quirk: BoolArray, rng: np.random.Generator
    ) -> FloatArray:
        """Normalised scores in [0, 1] (0, 0.25, ..., 1) for arrays of the same shape."""
        raw = 1 + 4 * progress**self.gamma + self.length_bias * length
        raw = raw + self.noise * rng.standard_normal(raw.shape)
        n = np.clip(np.rint(raw), 1, 5).astype(np.int64)
        if self.exploitable:
            n = np.where(quirk, 5, n)
        return _NORMALISED[n - 1]


@dataclass(frozen=True)
class Rollouts:
    """Sampled rollouts: ``[prompts, group, max_len]`` arrays (valid where ``t < length``)."""

    tokens: IntArray
    on_path: BoolArray  # before each token: was the rollout still on the reference's path
    length: IntArray  # [prompts, group], tokens including the EOS
    matched: IntArray  # [prompts, group], tokens matching the reference before a mistake
    quirk_at: IntArray  # [prompts, group], first quirk token's position (max_len: none)


class World:
    """A set of prompts: hidden references, lengths, and the base model's starting logits.

    Args:
        prompts: how many prompts.
        vocab: V, content tokens.
        lengths: (shortest, longest) reference length in content tokens.
        p0: (lowest, highest) starting probability of solving a prompt, log-uniform.
        seed: seeds the references and difficulties.
    """

    def __init__(
        self,
        prompts: int,
        *,
        vocab: int = 4,
        lengths: tuple[int, int] = (3, 8),
        p0: tuple[float, float] = (1e-4, 0.2),
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.prompts, self.vocab = prompts, vocab
        self.eos, self.quirk = vocab, vocab + 1
        self.actions = vocab + 2
        self.lengths: IntArray = rng.integers(lengths[0], lengths[1] + 1, size=prompts)
        self.max_len = int(lengths[1]) + 3
        # the reference, then EOS, then padding with EOS (never compared past L + 1)
        self.reference: IntArray = np.full((prompts, self.max_len), self.eos, dtype=np.int64)
        for p, n in enumerate(self.lengths):
            self.reference[p, :n] = rng.integers(vocab, size=n)
        self.p0: FloatArray = np.exp(rng.uniform(np.log(p0[0]), np.log(p0[1]), size=prompts))

    def initial_logits(self, quirk_logit: float = -2.0) -> FloatArray:
        """The base model: ``[prompts, max_len, 2 (off/on path), actions]`` logits.

        On the path, the right token's bonus ``b`` solves the prompt with probability
        ``p0``: per token ``c = p0 ** (1 / (L + 1))`` and ``c = e^b / (e^b + V + e^quirk)``.
        """
        theta = np.zeros((self.prompts, self.max_len, 2, self.actions))
        theta[..., self.quirk] = quirk_logit
        c = self.p0 ** (1.0 / (self.lengths + 1))
        bonus = np.log(c * (self.vocab + np.exp(quirk_logit)) / (1 - c))
        p, t = np.indices((self.prompts, self.max_len))
        theta[p, t, 1, self.reference] += bonus[:, None]
        return theta

    def progress(self, matched: IntArray, upto: IntArray) -> FloatArray:
        """q of a rollout's first ``upto`` tokens: its correct prefix over ``L + 1``."""
        return np.minimum(matched, upto) / (self.lengths[:, None, None] + 1)


class Policy:
    """Softmax rows of logits ``theta`` (see :meth:`World.initial_logits`)."""

    def __init__(self, world: World, theta: FloatArray) -> None:
        self.world, self.theta = world, theta

    def probs(self) -> FloatArray:
        z = np.exp(self.theta - self.theta.max(axis=-1, keepdims=True))
        out: FloatArray = z / z.sum(axis=-1, keepdims=True)
        return out

    def sample(self, group: int, rng: np.random.Generator) -> Rollouts:
        """``group`` rollouts of every prompt."""
        w, pi = self.world, self.probs()
        shape = (w.prompts, group)
        tokens = np.full((*shape, w.max_len), w.eos, dtype=np.int64)
        on_path = np.zeros((*shape, w.max_len), dtype=bool)
        alive, on = np.ones(shape, dtype=bool), np.ones(shape, dtype=bool)
        length = np.full(shape, w.max_len, dtype=np.int64)
        prompt = np.arange(w.prompts)[:, None]
        for t in range(w.max_len):
            cdf = np.cumsum(pi[prompt, t, on.astype(np.int64)], axis=-1)
            u = rng.random((*shape, 1))
            a = np.minimum((u > cdf).sum(axis=-1), w.actions - 1)
            a = np.where(alive, a, w.eos)
            tokens[..., t], on_path[..., t] = a, on & alive
            on = on & (a == w.reference[:, t : t + 1])
            length = np.where(alive & (a == w.eos), t + 1, length)
            alive = alive & (a != w.eos)
        valid = np.arange(w.max_len) < length[..., None]
        matched = (on_path & valid & (tokens == w.reference[:, None, :])).sum(axis=-1)
        is_quirk = (tokens == w.quirk) & valid
        quirk_at = np.where(is_quirk.any(axis=-1), is_quirk.argmax(axis=-1), w.max_len)
        return Rollouts(tokens, on_path, length, matched, quirk_at)

    def solve_probability(self) -> FloatArray:
        """Per prompt, the exact probability that one rollout is correct (pass@1)."""
        w, pi = self.world, self.probs()
        p, t = np.indices((w.prompts, w.max_len))
        right = pi[p, t, 1, w.reference]
        on_reference = t <= w.lengths[:, None]  # the L tokens and the EOS
        out: FloatArray = np.prod(np.where(on_reference, right, 1.0), axis=1)
        return out

    def path_entropy(self) -> FloatArray:
        """Per prompt, the mean entropy (nats) of the next-token rows along the reference."""
        w, pi = self.world, self.probs()
        h = -(pi[:, :, 1] * np.log(np.maximum(pi[:, :, 1], 1e-300))).sum(axis=-1)
        on_reference = np.arange(w.max_len) <= w.lengths[:, None]
        out: FloatArray = (h * on_reference).sum(axis=1) / on_reference.sum(axis=1)
        return out

    def apply(self, rollouts: Rollouts, advantages: FloatArray, lr: float) -> None:
        """One policy-gradient step: theta += lr * mean over the group of
        ``sum_t A_t grad log pi(a_t | h_t)`` (exact softmax gradients; NaN: not trained)."""
        w, pi = self.world, self.probs()
        valid = np.arange(w.max_len) < rollouts.length[..., None]
        adv = np.where(valid & ~np.isnan(advantages), advantages, 0.0)
        group = adv.shape[1]
        p, _, t = np.indices(adv.shape)
        rows = (p, t, rollouts.on_path.astype(np.int64))
        grad = np.zeros_like(self.theta)
        np.add.at(grad, (*rows, rollouts.tokens), adv)  # the one-hot part
        weight = np.zeros(self.theta.shape[:-1])
        np.add.at(weight, rows, adv)
        grad -= weight[..., None] * pi  # minus sum of A * pi
        self.theta += lr * grad / group
