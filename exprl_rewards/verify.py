"""What does each advantage estimator optimise? An exact, numpy-only answer.

``python -m exprl_rewards.verify`` builds a toy problem small enough to enumerate: a
tabular autoregressive softmax policy over ``L = K * T`` tokens (K segments of T tokens,
V choices per token, one parameter row per prefix), a hidden reference sequence, and a
process score per segment boundary: the fraction of the reference matched so far, plus
optional fixed noise per prefix (a miscalibrated judge). The outcome score is the last
segment's score.

For each estimator it computes, exactly by enumerating every group of G rollouts, the
expected policy-gradient update ``E[sum_t A_t grad log pi(a_t | h_t)]``, pushing the
library's own advantage and token-broadcast code through every group, and compares it
with the exact gradient of two objectives, computed independently by backward
recursion over prefixes:

- ``E[s_K]``: the expected final score, what ExpRL means to raise;
- ``E[mean_k s_k]``: the expected mean prefix score (credit for early progress).

It reports the cosine to each, the scale (projection on grad E[s_K] over its squared
norm), the relative bias ``|update - grad| / |grad|``, and the change in E[s_K] after a
small step along the update. Estimators documented as unbiased (RLOO; return-to-go
with gamma = 1) or as exact in direction (Dr. GRPO, scale (G-1)/G) are checked, and
the command exits 1 if one is not. A Monte Carlo run with sampled groups then shows
the sampled estimate converging to the exact one.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from .cli.parser import ExpRLParser
from .rewards.advantages import outcome_advantages, process_advantages
from .text.ragged import Ragged
from .text.tokens import broadcast_to_tokens

__all__ = ["ToyProblem", "main", "verify"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Claim = Literal["unbiased", "direction", ""]
Semantics = Literal["prefix", "segment"]
TOLERANCE = 1e-8


class ToyProblem:
    """A fully enumerable autoregressive policy with process scores per segment.

    Args:
        vocab: V, choices per token.
        segments: K, segments per sequence.
        tokens_per_segment: T.
        noise: std of the fixed noise added to each score (then clipped to [0, 1]).
        seed: seeds the reference, the noise and the initial policy.
        semantics: what a step's score means. ``"prefix"``: the rollout up to the step,
            the share of the whole reference matched so far (the paper's description);
            ``"segment"``: the step alone against its part of the reference, the share of
            its own tokens that match (the released math judge, which sees one step and
            the reference). The noise is fixed per judged text: per prefix, or per
            segment's own tokens.
    """

    def __init__(
        self,
        vocab: int,
        segments: int,
        tokens_per_segment: int,
        noise: float,
        seed: int,
        semantics: Semantics = "prefix",
    ) -> None:
        rng = np.random.default_rng(seed)
        self.vocab, self.segments, self.tps = vocab, segments, tokens_per_segment
        self.length = length = segments * tokens_per_segment
        self.seqs: IntArray = np.array(list(itertools.product(range(vocab), repeat=length)))
        self.reference = rng.integers(vocab, size=length)
        level_sizes = [vocab**t for t in range(length)]
        self.level_offsets = np.cumsum([0, *level_sizes])
        n = np.arange(len(self.seqs))
        # Row of the parameter table used at token t of sequence n: its prefix's id.
        self.prefix_rows: IntArray = np.stack(
            [self.level_offsets[t] + n // vocab ** (length - t) for t in range(length)], axis=1
        )
        self.semantics = semantics
        right = self.seqs == self.reference
        t = tokens_per_segment
        if semantics == "prefix":
            scores = np.cumsum(right, axis=1)[:, t - 1 :: t] / length
        else:  # each segment alone: its own tokens against the reference's at their place
            scores = right.reshape(len(self.seqs), segments, t).mean(axis=2)
        for k in range(segments):
            end = (k + 1) * t
            table = rng.normal(0.0, noise, size=vocab ** (end if semantics == "prefix" else t))
            judged = n // vocab ** (length - end)  # the prefix's id ...
            if semantics == "segment":
                judged = judged % vocab**t  # ... or the segment's own tokens
            scores[:, k] += table[judged]
        self.scores: FloatArray = np.clip(scores, 0.0, 1.0)
        # the sparse objective: the whole reference reproduced
        self.correct: FloatArray = right.all(axis=1).astype(np.float64)
        self.theta: FloatArray = rng.normal(0.0, 1.0, size=(int(self.level_offsets[-1]), vocab))

    def policy(self, theta: FloatArray) -> FloatArray:
        """Softmax over each prefix's row of logits."""
        z = np.exp(theta - theta.max(axis=1, keepdims=True))
        pi: FloatArray = z / z.sum(axis=1, keepdims=True)
        return pi

    def seq_probs(self, theta: FloatArray) -> FloatArray:
        """Probability of every sequence under the policy."""
        pi = self.policy(theta)
        probs: FloatArray = np.exp(np.log(pi[self.prefix_rows, self.seqs]).sum(axis=1))
        return probs

    def objective(self, theta: FloatArray, values: FloatArray) -> float:
        """Expected ``values`` (one per sequence) under the policy."""
        return float(self.seq_probs(theta) @ values)

    def exact_gradient(self, theta: FloatArray, values: FloatArray) -> FloatArray:
        """Gradient of the expected ``values`` by backward recursion over prefixes.

        Uses d E / d theta[h, a] = P(h) pi(a|h) (Q(h, a) - V(h)); independent of the
        score-function identity the estimators rely on.
        """
        pi = self.policy(theta)
        v = self.vocab
        reach = [np.ones(1)]
        for t in range(self.length - 1):
            pi_t = pi[self.level_offsets[t] : self.level_offsets[t + 1]]
            reach.append((reach[t][:, None] * pi_t).reshape(-1))
        grad = np.zeros_like(theta)
        value = values.astype(np.float64)
        for t in range(self.length - 1, -1, -1):
            rows = slice(self.level_offsets[t], self.level_offsets[t + 1])
            q = value.reshape(v**t, v)
            value = (pi[rows] * q).sum(axis=1)
            grad[rows] = reach[t][:, None] * pi[rows] * (q - value[:, None])
        return grad

    def update(self, pi: FloatArray, seq_index: IntArray, weight: FloatArray) -> FloatArray:
        """``sum_i sum_t weight[i, t] * grad log pi(a_t | h_t)`` for sequences ``seq_index``."""
        rows = self.prefix_rows[seq_index].ravel()
        w = weight.ravel()
        out = np.zeros_like(pi)
        np.add.at(out, (rows, self.seqs[seq_index].ravel()), w)
        out -= np.bincount(rows, weights=w, minlength=len(pi))[:, None] * pi
        return out


# An estimator maps group scores (M groups, G rollouts, K segments) to advantages of the
# same shape, through the library's public functions.
Estimate = Callable[[FloatArray], FloatArray]


def _outcome(estimator: Literal["grpo", "drgrpo", "rloo"]) -> Estimate:
    def run(s: FloatArray) -> FloatArray:
        m, g, k = s.shape
        groups = np.repeat(np.arange(m), g)
        adv = outcome_advantages(s[:, :, -1].ravel(), groups, estimator=estimator).values
        return np.repeat(adv.reshape(m, g, 1), k, axis=2)

    return run


def _process(
    estimator: Literal["delta", "end", "group", "prefix", "rtg"], **options: object
) -> Estimate:
    def run(s: FloatArray) -> FloatArray:
        m, g, k = s.shape
        ragged = Ragged(s.ravel(), np.full(m * g, k))
        groups = np.repeat(np.arange(m), g)
        adv = process_advantages(ragged, estimator, group_ids=groups, **options)
        return adv.values.values.reshape(m, g, k)

    return run


@dataclass(frozen=True)
class Spec:
    name: str
    claim: Claim
    estimate: Estimate


def estimators(group: int) -> list[Spec]:
    """The estimators checked, with what each is documented to do."""
    return [
        Spec("outcome grpo", "", _outcome("grpo")),
        Spec("outcome drgrpo", "direction", _outcome("drgrpo")),
        Spec("outcome rloo", "unbiased", _outcome("rloo")),
        Spec("process delta (released)", "", _process("delta")),
        Spec("process end", "", _process("end")),
        Spec("process group", "", _process("group")),
        Spec("process prefix (released)", "", _process("prefix")),
        Spec("process rtg gamma=1", "unbiased", _process("rtg")),
        Spec("process rtg gamma=0.9", "", _process("rtg", gamma=0.9)),
        Spec("process rtg normalized", "", _process("rtg", normalize=True)),
    ]


def _token_weights(problem: ToyProblem, adv: FloatArray) -> FloatArray:
    """Per-token coefficients (rows, L) from per-segment advantages (rows, K)."""
    rows, k = adv.shape
    counts = Ragged(np.full(rows * k, problem.tps), np.full(rows, k))
    return broadcast_to_tokens(Ragged(adv.ravel(), np.full(rows, k)), counts).values


def exact_update(problem: ToyProblem, spec: Spec, group: int, probs: FloatArray) -> FloatArray:
    """E[sum_t A_t grad log pi] over every ordered group of ``group`` rollouts."""
    n = len(problem.seqs)
    members = np.indices((n,) * group).reshape(group, -1).T  # member 0 varies slowest
    adv = spec.estimate(problem.scores[members])[:, 0, :]  # advantages of member 0
    others = np.prod(probs[members[: n ** (group - 1), 1:]], axis=1)
    w = np.einsum("nok,o->nk", adv.reshape(n, n ** (group - 1), -1), others)
    weights = probs[:, None] * _token_weights(problem, w)
    return problem.update(problem.policy(problem.theta), np.arange(n), weights)


def sampled_update(
    problem: ToyProblem, spec: Spec, group: int, n_groups: int, rng: np.random.Generator
) -> FloatArray:
    """Monte Carlo estimate of the same expectation from ``n_groups`` sampled groups."""
    probs = problem.seq_probs(problem.theta)
    idx = rng.choice(len(probs), size=(n_groups, group), p=probs / probs.sum())
    adv = spec.estimate(problem.scores[idx]).reshape(n_groups * group, -1)
    weights = _token_weights(problem, adv) / (n_groups * group)
    return problem.update(problem.policy(problem.theta), idx.ravel(), weights)


def _cos(a: FloatArray, b: FloatArray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass(frozen=True)
class Row:
    name: str
    claim: Claim
    cos_final: float
    cos_mean: float
    cos_correct: float
    scale: float
    rel_bias: float
    delta_j: float
    ok: bool


def verify(
    problem: ToyProblem, group: int, step: float = 0.05
) -> tuple[list[Row], dict[str, FloatArray]]:
    """Exact expected update of every estimator vs the exact gradients."""
    probs = problem.seq_probs(problem.theta)
    final = problem.scores[:, -1]
    grad_final = problem.exact_gradient(problem.theta, final)
    grad_mean = problem.exact_gradient(problem.theta, problem.scores.mean(axis=1))
    grad_correct = problem.exact_gradient(problem.theta, problem.correct)
    j0 = problem.objective(problem.theta, final)
    rows, updates = [], {}
    for spec in estimators(group):
        u = exact_update(problem, spec, group, probs)
        updates[spec.name] = u
        scale = float((u * grad_final).sum() / (grad_final**2).sum())
        rel_bias = float(np.linalg.norm(u - grad_final) / np.linalg.norm(grad_final))
        cos = _cos(u, grad_final)
        stepped = problem.theta + step * u / np.linalg.norm(u)
        if spec.claim == "unbiased":
            ok = rel_bias < TOLERANCE
        elif spec.claim == "direction":
            ok = abs(cos - 1) < TOLERANCE and abs(scale - (group - 1) / group) < TOLERANCE
        else:
            ok = True
        rows.append(
            Row(
                spec.name,
                spec.claim,
                cos,
                _cos(u, grad_mean),
                _cos(u, grad_correct),
                scale,
                rel_bias,
                problem.objective(stepped, final) - j0,
                ok,
            )
        )
    return rows, updates


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ExpRLParser(prog="python -m exprl_rewards.verify", description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, default=2, help="choices per token (default 2)")
    p.add_argument("--segments", type=int, default=3, help="segments per rollout (default 3)")
    p.add_argument("--tokens-per-segment", type=int, default=2, help="(default 2)")
    p.add_argument("--group", type=int, default=3, help="rollouts per prompt (default 3)")
    p.add_argument("--noise", type=float, default=0.1, help="judge noise std (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--semantics",
        choices=["prefix", "segment"],
        default="prefix",
        help="what a step's score means: the rollout so far against the whole reference"
        " (prefix), or the step alone against its part of it (segment: the released math"
        " judge)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="with more than one, the exact table over seeds SEED, SEED+1, ... (mean and"
        " least cosine per estimator; every seed's claims checked), and no Monte Carlo",
    )
    p.add_argument(
        "--samples",
        default="100,1000,10000",
        help="Monte Carlo group counts, comma-separated (default 100,1000,10000)",
    )
    return p.parse_args(argv)


def over_seeds(args: argparse.Namespace) -> int:
    """The exact table over ``args.seeds`` seeds: how each estimator's expected update
    aligns with each objective, as a mean and the least over seeds."""
    t0 = time.perf_counter()
    seeds = range(args.seed, args.seed + args.seeds)
    rows: dict[str, list[Row]] = {}
    for seed in seeds:
        problem = ToyProblem(args.vocab, args.segments, args.tokens_per_segment, args.noise,
                             seed, args.semantics)  # fmt: skip
        for r in verify(problem, args.group)[0]:
            rows.setdefault(r.name, []).append(r)
    print(
        f"Toy problems: V={args.vocab}, K={args.segments} x T={args.tokens_per_segment},"
        f" G={args.group}, judge noise {args.noise}, {args.semantics} scores, seeds"
        f" {seeds.start}-{seeds.stop - 1}: cosine of the expected update with each"
        " objective's gradient, mean (least)"
    )
    header = f"{'estimator':<27} {'E[s_K]':>15} {'E[mean s_k]':>15} {'P[right]':>15}"
    print(header + "\n" + "-" * len(header))
    for name, runs in rows.items():
        cells = [np.array([getattr(r, c) for r in runs]) for c in
                 ("cos_final", "cos_mean", "cos_correct")]  # fmt: skip
        print(f"{name:<27} " + " ".join(f"{c.mean():>+7.3f} ({c.min():+.3f})" for c in cells))
    failed = sorted({r.name for runs in rows.values() for r in runs if not r.ok})
    print(f"\n{time.perf_counter() - t0:.1f} s")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("PASSED: every estimator documented as unbiased is unbiased on every seed.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the verification, print the tables, return the exit code."""
    args = _parse(argv)
    if args.seeds > 1:
        return over_seeds(args)
    t0 = time.perf_counter()
    problem = ToyProblem(args.vocab, args.segments, args.tokens_per_segment, args.noise,
                         args.seed, args.semantics)  # fmt: skip
    n = len(problem.seqs)
    print(
        f"Toy problem: V={args.vocab}, K={args.segments} segments x T={args.tokens_per_segment} "
        f"tokens, {n} sequences, groups of G={args.group} ({n**args.group} enumerated), "
        f"judge noise {args.noise}, seed {args.seed}, {args.semantics} scores"
    )
    print(f"E[s_K] = {problem.objective(problem.theta, problem.scores[:, -1]):.4f}\n")
    rows, updates = verify(problem, args.group)
    header = (
        f"{'estimator':<27} {'claim':<9} {'cos E[s_K]':>10} {'cos E[mean]':>11} "
        f"{'cos P[right]':>12} {'scale':>8} {'rel.bias':>9} {'dE[s_K]':>9}  check"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        check = "ok" if r.claim and r.ok else ("FAIL" if not r.ok else "-")
        print(
            f"{r.name:<27} {r.claim or '-':<9} {r.cos_final:>10.4f} {r.cos_mean:>11.4f} "
            f"{r.cos_correct:>12.4f} {r.scale:>8.4f} {r.rel_bias:>9.2e} {r.delta_j:>+9.5f}  {check}"
        )
    print(
        "\nP[right]: the probability of reproducing the whole reference (the sparse"
        " reward), what both score semantics stand in for."
        f"\nscale: projection on grad E[s_K] / |grad|^2 (Dr. GRPO: (G-1)/G = "
        f"{(args.group - 1) / args.group:.4f}); dE[s_K]: change after a step of 0.05 along "
        f"the update; tolerance {TOLERANCE:g}."
    )

    counts = [int(c) for c in args.samples.split(",") if c]
    rng = np.random.default_rng(args.seed + 1)
    print("\nMonte Carlo: relative error |sampled - exact| / |exact| by number of groups")
    print(f"{'estimator':<27} " + " ".join(f"{c:>10}" for c in counts))
    mc_ok = True
    for spec in estimators(args.group):
        exact = updates[spec.name]
        errors = [
            float(
                np.linalg.norm(sampled_update(problem, spec, args.group, c, rng) - exact)
                / np.linalg.norm(exact)
            )
            for c in counts
        ]
        print(f"{spec.name:<27} " + " ".join(f"{e:>10.4f}" for e in errors))
        # 100x more groups should cut the error about 10x; ask for a third of that.
        if len(counts) > 1 and errors[-1] > errors[0] * 3 * math.sqrt(counts[0] / counts[-1]):
            mc_ok = False
    failed = [r.name for r in rows if not r.ok]
    print(f"\n{time.perf_counter() - t0:.1f} s")
    if failed or not mc_ok:
        print(f"FAILED: {', '.join(failed) or 'Monte Carlo convergence'}", file=sys.stderr)
        return 1
    print("PASSED: every estimator documented as unbiased is unbiased.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
