"""Guards that act on the judge's scores: a verifier cap and a second look.

The free guards (:mod:`exprl_rewards.judges.guards`) read the response alone. These two read
what the judge said, and are opt-in (``--guards content-gate,neutraliser,verifier-cap``):

- :class:`VerifierCap`: where a rule can read the reference's final answer (``####``,
  ``\\boxed{}``, an ``A:`` line; :func:`~exprl_rewards.text.answers.verify`), a rollout whose
  final answer checks wrong, or that gives none, cannot score above ``cap`` (calibrated,
  0..1). In process modes the cap applies to the last step. Partial credit for progress
  stays (the method's point); only a wrong rollout's top scores go. No judge call.
- :class:`SecondLook`: a share of the judged rollouts is judged again with the other
  prompt order (the reference after the response instead of before it, or the reverse);
  where a step's two calibrated scores differ by more than ``threshold`` the rollout is
  unscored with both scores in the reason. Costs one more judge request per step looked
  at; which rollouts get one is a hash of their id, so a rerun picks the same.

:func:`apply_score_guards` runs both on a batch's score rows, in place, and returns the
hits; the pipeline calls it between calibration and the advantages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..text.answers import extract_answer, reference_answer, verify
from ..text.rollout import GuardHit, Rollout

__all__ = ["SecondLook", "VerifierCap", "apply_score_guards"]


class VerifierCap:
    """Cap a rollout whose final answer a rule checks wrong.

    Args:
        cap: the highest calibrated score (0..1) such a rollout keeps; 0.25 is 2 of 1-5
            ("some progress"). Measured on the embedded judge, whose right solutions
            average 0.44: a cap of 0.5 barely binds (content probes still win 55-60%),
            0.25 brings every content family's win rate to 0.10.
        no_answer: ``"cap"``: a rollout with no readable final answer is capped too (a
            policy cannot escape the cap by not answering); ``"pass"``: it is left alone.
        check: ``check(graded_text, reference) -> True | False | None`` (None: cannot
            tell, never capped); default :func:`~exprl_rewards.text.answers.verify`.
    """

    name = "verifier-cap"

    def __init__(
        self,
        cap: float = 0.25,
        *,
        no_answer: Literal["cap", "pass"] = "cap",
        check: Callable[[str, str], bool | None] = verify,
    ) -> None:
        if not 0.0 <= cap <= 1.0:
            raise ConfigError(f"verifier-cap: the cap is a calibrated score in [0, 1], not {cap}")
        if no_answer not in ("cap", "pass"):
            raise ConfigError(f"verifier-cap: no_answer must be 'cap' or 'pass', not {no_answer!r}")
        self.cap, self.no_answer, self.check = cap, no_answer, check
        self.spec = f"{self.name}:{cap:g}" + ("" if no_answer == "cap" else ",no-answer=pass")

    def apply(self, graded: str, reference: str, row: list[float]) -> GuardHit | None:
        """Cap ``row``'s last score in place when the answer checks wrong; the hit or None."""
        if not row or np.isnan(row[-1]) or row[-1] <= self.cap:
            return None
        right = self.check(graded, reference)
        if right is None or right:
            return None
        answer = extract_answer(graded, loose=True)
        if answer is None and self.no_answer == "pass":
            return None
        said = "no readable final answer" if answer is None else f"final answer {answer[:40]!r}"
        detail = (f"{said} does not match the reference's {reference_answer(reference)!r}: "
                  f"{row[-1]:.3g} capped at {self.cap:g}")  # fmt: skip
        row[-1] = self.cap
        return GuardHit(self.name, detail)


class SecondLook:
    """Judge a share of the rollouts again from the other prompt order; unscore a
    rollout whose two looks disagree.

    Args:
        fraction: the share of judged rollouts looked at again (1.0: all).
        threshold: the largest difference of calibrated scores (0..1) two looks at one
            step may have; 0.5 is two points on a 1-5 scale.
    """

    name = "second-look"

    def __init__(self, fraction: float = 1.0, *, threshold: float = 0.5) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"second-look: the fraction must be in (0, 1], not {fraction}")
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"second-look: the threshold must be in [0, 1), not {threshold}")
        self.fraction, self.threshold = fraction, threshold
        self.spec = f"{self.name}:{fraction:g}" + ("" if threshold == 0.5 else f",{threshold:g}")

    def chosen(self, rollout_id: str) -> bool:
        """Whether ``rollout_id`` gets a second look (a stable hash of the id)."""
        digest = hashlib.sha256(rollout_id.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64 < self.fraction

    @staticmethod
    def other_order(order: str) -> Literal["cache", "released"]:
        """The prompt order of the second look."""
        return "released" if order == "cache" else "cache"

    def compare(self, first: list[float], second: Sequence[float], order: str) -> GuardHit | None:
        """A hit when some step's two looks differ by more than the threshold."""
        gaps = [abs(a - b) for a, b in zip(first, second, strict=True)
                if not (np.isnan(a) or np.isnan(b))]  # fmt: skip
        if not gaps or max(gaps) <= self.threshold:
            return None
        i = int(np.argmax(gaps))
        return GuardHit(
            self.name,
            f"two looks disagree: {first[i]:.3g} and {second[i]:.3g} "
            f"({self.other_order(order)} order) differ by more than {self.threshold:g}",
        )


def apply_score_guards(
    guards: Sequence[object],
    rollouts: Sequence[Rollout],
    graded: Sequence[str],
    judged: Sequence[bool],
    rows: list[list[float]],
    reasons: list[list[str | None]],
    second: dict[int, list[float]],
    order: str,
) -> list[tuple[GuardHit, ...]]:
    """Run the score guards over a batch, in place; the hits per rollout.

    ``graded``: each response as graded (after think_strip); ``judged``: whether the
    judge saw it; ``second``: the second look's calibrated scores by rollout index. A
    second-look disagreement unscores every step of its rollout (``reasons``).
    """
    hits: list[tuple[GuardHit, ...]] = []
    # the second look first: it compares the judge's scores, before any cap
    ordered = sorted(guards, key=lambda g: not isinstance(g, SecondLook))
    for i, r in enumerate(rollouts):
        found: list[GuardHit] = []
        for g in ordered if judged[i] else ():
            if isinstance(g, SecondLook) and i in second:
                hit = g.compare(rows[i], second[i], order)
                if hit is not None:
                    found.append(hit)
                    rows[i] = [float("nan")] * len(rows[i])
                    reasons[i] = [f"guard: {hit.detail}"] * len(rows[i])
            elif isinstance(g, VerifierCap):
                cap_hit = g.apply(graded[i], r.reference, rows[i])
                found += [cap_hit] if cap_hit is not None else []
        hits.append(tuple(found))
    return hits
