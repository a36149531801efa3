"""Rule-based answer checking: Stage II's sparse reward and the verifier-cap guard.

:func:`check_answer` is Stage II's sparse reward: 1 when the final answer is right, else
0. :func:`verify` is the three-way form the verifier cap (:mod:`exprl_rewards.judges.score_guards`)
uses: right, wrong, or None when no rule can decide.

- **The answer** is the content of the response's last ``\\boxed{...}`` (braces
  balanced), else what follows its last ``####`` line (GSM8K's own format). A response
  with neither gets 0: the policy is asked for ``\\boxed{}``.
- **GSM8K** gold answers (after ``####``) are integers: both sides are normalised (``$``,
  thousands separators, a trailing unit word or period dropped) and compared as numbers.
- **MATH-500** gold answers are LaTeX: compared symbolically with Hugging Face's
  ``math-verify`` (the ``train`` extra), with its signal-based timeouts turned off (they
  fail outside the main thread); the extracted answer is capped at
  :data:`MAX_ANSWER_CHARS` so a pathological string cannot stall sympy for long.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Literal

from ..errors import MissingExtraError

__all__ = [
    "MAX_ANSWER_CHARS",
    "check_answer",
    "extract_answer",
    "gold_answer",
    "reference_answer",
    "verify",
]

Dataset = Literal["gsm8k", "math500"]
MAX_ANSWER_CHARS = 200
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Looser final-answer forms, on the response's last non-empty line: "A: 18" (the GSM8K
# example solutions' own form), "Answer: 18", "The (final) answer is 18."
_LAST_LINE = re.compile(
    r"^\s*(?:[*_#>]+\s*)?(?:A|(?:final\s+)?answer)\s*[:=]\s*(?P<a>.+?)\s*$"
    r"|\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*(?P<b>[^\n]+?)\s*\.?\s*$",
    re.IGNORECASE,
)


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, braces balanced; None if none closes."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def extract_answer(response: str, *, loose: bool = False) -> str | None:
    """The response's final answer: its last ``\\boxed{}``, else its last ``####`` line.

    ``loose`` also reads an ``A: 18``, ``Answer: 18`` or "the answer is 18" last line.

    >>> extract_answer("9 * 2 = 18\\nA: 18", loose=True)
    '18'
    >>> extract_answer("9 * 2 = 18\\nA: 18") is None
    True
    """
    boxed = _last_boxed(response)
    if boxed is not None:
        return boxed.strip()
    if "####" in response:
        return response.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
    lines = [line for line in response.splitlines() if line.strip()]
    if loose and lines and (m := _LAST_LINE.search(lines[-1])):
        return (m.group("a") or m.group("b")).strip().strip("*_").rstrip(".").strip()
    return None


def reference_answer(reference: str) -> str | None:
    """A reference solution's final answer in any form it may take (``####``,
    ``\\boxed{}``, an ``A:`` line), or None."""
    return extract_answer(reference, loose=True)


def gold_answer(reference: str, dataset: Dataset) -> str:
    """The gold final answer inside a reference solution."""
    if dataset == "gsm8k":
        if "####" not in reference:
            raise ValueError("a GSM8K reference must end with '#### ANSWER'")
        return reference.rsplit("####", 1)[1].strip()
    boxed = _last_boxed(reference)
    if boxed is None:
        raise ValueError("a MATH reference must hold a \\boxed{} answer")
    return boxed.strip()


def _as_number(text: str) -> Decimal | None:
    cleaned = text.replace("\\$", "").replace("$", "").replace(",", "").replace("\\!", "")
    cleaned = re.sub(r"\\(?:text|mathrm)\{[^}]*\}", "", cleaned).strip().rstrip(".")
    match = _NUMBER.fullmatch(cleaned) or _NUMBER.match(cleaned)  # "18 dollars" -> 18
    if match is None or (match.end() < len(cleaned) and not cleaned[match.end()].isspace()):
        return None
    try:
        return Decimal(match.group())
    except InvalidOperation:
        return None


def verify(response: str, reference: str) -> bool | None:
    """Whether ``response``'s final answer equals ``reference``'s: True, False, or None
    when no rule decides (the reference has no readable answer; a symbolic answer and
    ``math-verify`` is not installed). A response with no readable answer is False.

    >>> verify("16 - 3 - 4 = 9 eggs, 9 * 2 = 18\\nA: 18", "... = $18\\n#### 18")
    True
    >>> verify("The answer is 17.", "#### 18")
    False
    """
    gold = reference_answer(reference)
    if gold is None:
        return None
    answer = extract_answer(response, loose=True)
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return False
    got, want = _as_number(answer), _as_number(gold)
    if want is not None and got is not None:
        return got == want
    if " ".join(answer.split()) == " ".join(gold.split()):
        return True
    try:
        return check_answer(answer.join(("\\boxed{", "}")), gold, "math500") == 1.0
    except MissingExtraError:
        return None


def check_answer(response: str, gold: str, dataset: Dataset) -> float:
    """1.0 when the response's final answer equals ``gold``, else 0.0."""
    answer = extract_answer(response)
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    if dataset == "gsm8k":
        got, want = _as_number(answer), _as_number(gold)
        return float(got is not None and want is not None and got == want)
    try:
        from math_verify import parse, verify  # type: ignore[import-untyped]
    except ImportError as e:
        raise MissingExtraError("math_verify", "train") from e
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"${answer}$", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return 0.0
    return float(verify(gold_parsed, pred_parsed, timeout_seconds=None))
