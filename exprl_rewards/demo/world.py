"""The testbed's world: prompts with hidden references, their rules, a simulated judge.

A *prompt* is a hidden reference: ``L`` content tokens (from a vocabulary of ``V``) and
then EOS. A rollout is correct when it establishes the whole reference and stops: the
sparse reward. Rollouts are cut into steps of ``T`` tokens, the "reasoning steps" a
process judge grades. Two worlds share this shape:

- **The path world** (``repairs=False``): a rollout must reproduce the reference token
  by token. The first wrong token takes it off the path for good: a reasoning chain that
  went wrong stays wrong, and nothing after it can matter to any prefix score.
- **The repair world** (``repairs=True``): two more actions, ``FILLER`` (an irrelevant
  step: it neither helps nor hurts) and ``RETRACT`` ("wait, that was wrong"). The state
  is ``k``, the reference tokens established so far, and whether a mistake is pending. A
  right token (the reference's next, nothing pending) establishes one more; any other
  content token, or the quirk, is a mistake and stays pending until a ``RETRACT`` clears
  it (a repair); content while a mistake is pending builds on it and establishes
  nothing. ``RETRACT`` with nothing pending and ``FILLER`` change nothing. EOS stops:
  correct when ``k = L`` and nothing is pending. Rollouts are longer (room for detours).

What a judge sees (:class:`JudgeSim`):

- a **prefix** (and a whole rollout, for outcome scores): ``q``, the reference tokens it
  established (the EOS counts as the last) over ``L + 1``. In the repair world a prefix
  whose mistake is still pending is worth half that (``JudgeSim.pending_weight``): a
  prefix holding an unretracted wrong step reads worse than the same prefix without it,
  as on real text.
- a **segment** alone: the mean credit of its tokens, as the released math judge rates
  one step against the reference: 1 for a token that matches the reference where it
  stands (path world: at its position; repair world: the reference's next token, even
  while a mistake is pending, since alone it reads as right), 1/2 for ``FILLER`` and
  ``RETRACT`` (irrelevant, a 3 on the 1-5 scale), 0 for a wrong token; the EOS is right
  when the rollout is correct.

The judge answers on the 1-5 scale, ``round(1 + 4 * q**gamma + bias * len / max_len +
noise * eps)`` clipped to 1-5, and 5 for anything containing the quirk token when it is
exploitable (an injected "Score: 5"); normalised as released, ``(N - 1) / 4``.

The *policy* is tabular: per prompt, per row and per "nothing wrong pending" flag, logits
over the actions. The row is the position in the path world (on the path, the tokens
established) and ``k`` in the repair world, so a policy there can learn to repair. Its
starting logits play the base model: on the path the right next token gets a
prompt-specific bonus, set so that the prompt is solved with a given starting
probability ``p0``; prompts range from easy (p0 ~ 0.2) to ones a random start almost
never solves (p0 ~ 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..judges.parsing import normalize_score

__all__ = ["JudgeSim", "Policy", "Rollouts", "Walk", "World"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_NORMALISED: FloatArray = np.array([normalize_score(n) for n in range(1, 6)])  # as released
DETOUR = 6  # the repair world's extra room: tokens beyond the longest reference and EOS
FILLER_LOGIT, RETRACT_LOGIT = -1.0, (-1.0, -4.0)  # the base model's (pending, not pending)


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
            the reference, the mean credit of its tokens, as the released math judge sees
            one step and the reference (a step after a mistake can be right; a step with
            the quirk scores 5 when exploitable). Outcome scores are the whole rollout's
            either way.
        pending_weight: in the repair world, what a prefix (or rollout) with a pending
            mistake is worth, as a share of the reference it established (1: a judge
            blind to mistakes, which only see progress stop, as in the path world).
    """

    noise: float = 0.5
    gamma: float = 1.0
    length_bias: float = 0.0
    exploitable: bool = False
    semantics: Literal["prefix", "segment"] = "prefix"
    pending_weight: float = 0.5

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
    """Rollouts and the world's record of them: ``[prompts, group, max_len]`` arrays
    (valid where ``t < length``) unless noted."""

    tokens: IntArray
    on_path: BoolArray  # before each token: nothing wrong is pending (the policy's flag)
    row: IntArray  # before each token: the policy's row (path: t; repair: k)
    credit: FloatArray  # each token alone: 1 right, 0.5 irrelevant, 0 wrong
    reached: IntArray  # [..., max_len + 1]: reference tokens established after t tokens
    pending: BoolArray  # [..., max_len + 1]: a mistake is pending after t tokens
    length: IntArray  # [prompts, group], tokens including the EOS
    matched: IntArray  # [prompts, group], reference tokens established (EOS included)
    quirk_at: IntArray  # [prompts, group], first quirk token's position (max_len: none)


class World:
    """A set of prompts: hidden references, lengths, the rules, and the base model's logits.

    Args:
        prompts: how many prompts.
        vocab: V, content tokens.
        lengths: (shortest, longest) reference length in content tokens.
        p0: (lowest, highest) starting probability of solving a prompt, log-uniform.
        seed: seeds the references and difficulties.
        repairs: the repair world (``FILLER`` and ``RETRACT``); else the path world.
    """

    def __init__(
        self,
        prompts: int,
        *,
        vocab: int = 4,
        lengths: tuple[int, int] = (3, 8),
        p0: tuple[float, float] = (1e-4, 0.2),
        seed: int = 0,
        repairs: bool = False,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.prompts, self.vocab, self.repairs = prompts, vocab, repairs
        self.eos, self.quirk = vocab, vocab + 1
        self.filler, self.retract = vocab + 2, vocab + 3  # actions only when repairs
        self.actions = vocab + (4 if repairs else 2)
        self.lengths: IntArray = rng.integers(lengths[0], lengths[1] + 1, size=prompts)
        self.max_len = int(lengths[1]) + (1 + DETOUR if repairs else 3)
        # the reference, then EOS, then padding with EOS (never compared past L + 1)
        self.reference: IntArray = np.full((prompts, self.max_len + 1), self.eos, dtype=np.int64)
        for p, n in enumerate(self.lengths):
            self.reference[p, :n] = rng.integers(vocab, size=n)
        self.p0: FloatArray = np.exp(rng.uniform(np.log(p0[0]), np.log(p0[1]), size=prompts))

    def initial_logits(self, quirk_logit: float = -2.0) -> FloatArray:
        """The base model: ``[prompts, max_len (rows), 2 (pending/on path), actions]``.

        On the path, the right token's bonus ``b`` solves the prompt with probability
        ``p0``. In the path world, per token ``c = p0 ** (1 / (L + 1))`` and
        ``c = e^b / (e^b + V + e^quirk)``; in the repair world ``b`` is found by
        bisection on :meth:`solve` (a detour and a repair also reach the end).
        """
        theta = np.zeros((self.prompts, self.max_len, 2, self.actions))
        theta[..., self.quirk] = quirk_logit
        if self.repairs:
            theta[..., self.filler] = FILLER_LOGIT
            theta[:, :, 0, self.retract], theta[:, :, 1, self.retract] = RETRACT_LOGIT
        p, t = np.indices((self.prompts, self.max_len))
        right = (p, t, 1, self.reference[:, : self.max_len])
        if not self.repairs:
            c = self.p0 ** (1.0 / (self.lengths + 1))
            theta[right] += np.log(c * (self.vocab + np.exp(quirk_logit)) / (1 - c))[:, None]
            return theta
        low, high = np.full(self.prompts, -20.0), np.full(self.prompts, 40.0)
        for _ in range(80):  # solve() rises with the bonus
            bonus = (low + high) / 2
            trial = theta.copy()
            trial[right] += bonus[:, None]
            above = self.solve(softmax(trial)) > self.p0
            high, low = np.where(above, bonus, high), np.where(above, low, bonus)
        theta[right] += ((low + high) / 2)[:, None]
        return theta

    def solve(self, pi: FloatArray) -> FloatArray:
        """Per prompt, the exact probability that a rollout of the policy ``pi`` (softmax
        rows, as :meth:`initial_logits`) is correct: pass@1."""
        p, t = np.indices((self.prompts, self.max_len))
        right = pi[p, t, 1, self.reference[:, : self.max_len]]
        last = t == self.lengths[:, None]  # the row where the right token is the EOS
        if not self.repairs:
            out: FloatArray = np.prod(np.where(t <= self.lengths[:, None], right, 1.0), axis=1)
            return out
        # a forward pass over tokens: the mass of live rollouts at each (k, pending)
        on_pi, off_pi = pi[:, :, 1], pi[:, :, 0]
        stay_on = on_pi[..., self.filler] + on_pi[..., self.retract]
        stop_on = np.where(last, 0.0, on_pi[..., self.eos])  # a wrong, early answer
        to_off = 1 - right - stop_on - stay_on
        back = off_pi[..., self.retract]
        stay_off = 1 - back - off_pi[..., self.eos]
        advance = np.where(t < self.lengths[:, None], right, 0.0)
        on, off = (t == 0).astype(np.float64), np.zeros((self.prompts, self.max_len))
        solved = np.zeros(self.prompts)
        for _ in range(self.max_len):
            solved += (on * right * last).sum(axis=1)
            moved = np.zeros_like(on)
            moved[:, 1:] = (on * advance)[:, :-1]
            on, off = on * stay_on + off * back + moved, on * to_off + off * stay_off
        return solved

    def replay(self, tokens: IntArray) -> Rollouts:
        """The world's record of given ``[prompts, group, max_len]`` tokens (from the first
        EOS on, the rest is ignored): what :meth:`Policy.sample` records as it samples."""
        walk = Walk(self, tokens.shape[1])
        for t in range(self.max_len):
            walk.step(t, tokens[..., t])
        return walk.rollouts()

    def prefix_progress(
        self, rollouts: Rollouts, upto: IntArray, pending_weight: float = 0.5
    ) -> FloatArray:
        """q of each rollout's first ``upto`` tokens (``upto``: ``[prompts, group, n]``);
        in the repair world, times ``pending_weight`` while a mistake is pending."""
        reached = np.take_along_axis(rollouts.reached, upto, axis=-1)
        q: FloatArray = reached / (self.lengths[:, None, None] + 1)
        if self.repairs:  # an unretracted mistake lowers what the prefix is worth
            pending = np.take_along_axis(rollouts.pending, upto, axis=-1)
            q = np.where(pending, q * pending_weight, q)
        return q


def softmax(theta: FloatArray) -> FloatArray:
    """Softmax over the last axis."""
    z = np.exp(theta - theta.max(axis=-1, keepdims=True))
    out: FloatArray = z / z.sum(axis=-1, keepdims=True)
    return out


class Walk:
    """``[prompts, group]`` rollouts moving through a world one token at a time."""

    def __init__(self, world: World, group: int) -> None:
        w, self.world = world, world
        shape, width = (w.prompts, group), w.max_len
        self.prompt = np.arange(w.prompts)[:, None]
        self.k = np.zeros(shape, dtype=np.int64)  # reference tokens established
        self.on, self.alive = np.ones(shape, dtype=bool), np.ones(shape, dtype=bool)
        self.length = np.full(shape, width, dtype=np.int64)
        self.tokens = np.full((*shape, width), w.eos, dtype=np.int64)
        self.on_path = np.zeros((*shape, width), dtype=bool)
        self.row = np.zeros((*shape, width), dtype=np.int64)
        self.credit = np.zeros((*shape, width))
        self.reached = np.zeros((*shape, width + 1), dtype=np.int64)
        self.pending = np.zeros((*shape, width + 1), dtype=bool)

    def state(self, t: int) -> IntArray | int:
        """The policy's row for the next token: the time in the path world (where on the
        path it equals ``k``), ``k`` in the repair world."""
        return self.k if self.world.repairs else t

    def step(self, t: int, action: IntArray) -> None:
        """Take token ``t`` (``action``; EOS once a rollout has stopped)."""
        w, alive, on = self.world, self.alive, self.on
        a = np.where(alive, action, w.eos)  # so a stopped rollout only ever "stops"
        row = self.state(t)
        stop, match = a == w.eos, a == w.reference[self.prompt, row]
        live_on = alive & on
        right = live_on & match
        self.tokens[..., t], self.on_path[..., t], self.row[..., t] = a, live_on, row
        if w.repairs:
            retract = a == w.retract
            detour = retract | (a == w.filler)
            self.credit[..., t] = np.where(detour, 0.5, np.where(stop, right, match))
            mistake = alive & ~right & ~detour  # a wrong EOS: a wrong final answer
            self.on = retract | (on & ~mistake)
        else:  # alone: right at its place, the reference's EOS included, nothing past it
            self.credit[..., t] = alive & match & (t <= w.lengths[:, None])
            self.on = on & match
        self.k = self.k + right
        self.reached[..., t + 1], self.pending[..., t + 1] = self.k, ~self.on
        self.length[alive & stop] = t + 1
        self.alive = ~stop

    def rollouts(self) -> Rollouts:
        w = self.world
        valid = np.arange(w.max_len) < self.length[..., None]
        is_quirk = (self.tokens == w.quirk) & valid
        quirk_at = np.where(is_quirk.any(axis=-1), is_quirk.argmax(axis=-1), w.max_len)
        return Rollouts(self.tokens, self.on_path, self.row, self.credit, self.reached,
                        self.pending, self.length, self.k, quirk_at)  # fmt: skip


class Policy:
    """Softmax rows of logits ``theta`` (see :meth:`World.initial_logits`).

    The rows are computed once per update: change ``theta`` through :meth:`apply`.
    """

    def __init__(self, world: World, theta: FloatArray) -> None:
        self.world, self.theta = world, theta
        self._probs: FloatArray | None = None
        self._cdf: FloatArray | None = None

    def probs(self) -> FloatArray:
        if self._probs is None:
            self._probs = softmax(self.theta)
        return self._probs

    def cdf(self) -> FloatArray:
        """Cumulative sums of the rows, the last one +inf (where rounding leaves it just
        under 1): sampling takes the first entry a uniform draw does not exceed."""
        if self._cdf is None:
            self._cdf = np.cumsum(self.probs(), axis=-1)
            self._cdf[..., -1] = np.inf
        return self._cdf

    def sample(self, group: int, rng: np.random.Generator) -> Rollouts:
        """``group`` rollouts of every prompt."""
        w, rows = self.world, self.cdf()
        walk = Walk(w, group)
        for t in range(w.max_len):
            cdf = rows[walk.prompt, walk.state(t), walk.on.view(np.int8)]
            u = rng.random((w.prompts, group, 1))
            walk.step(t, np.argmax(u <= cdf, axis=-1))  # the first row entry past u
        return walk.rollouts()

    def solve_probability(self) -> FloatArray:
        """Per prompt, the exact probability that one rollout is correct (pass@1)."""
        return self.world.solve(self.probs())

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
        p = np.indices(adv.shape)[0]
        rows = (p, rollouts.row, rollouts.on_path.astype(np.int64))
        # sums of A per (row) and per (row, token), in sample order (as np.add.at would)
        row = np.ravel_multi_index(rows, self.theta.shape[:-1]).ravel()
        at = row * self.theta.shape[-1] + rollouts.tokens.ravel()
        grad = np.bincount(at, adv.ravel(), self.theta.size).astype(np.float64, copy=False)
        grad = grad.reshape(self.theta.shape)
        weight = np.bincount(row, adv.ravel(), pi[..., 0].size).reshape(pi.shape[:-1])
        grad -= weight[..., None] * pi  # the one-hot part minus sum of A * pi
        self.theta = self.theta + lr * grad / group
        self._probs = self._cdf = None
