"""Stage II's sparse reward: 1 when the final answer is right, else 0, by a real checker.

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

__all__ = ["MAX_ANSWER_CHARS", "check_answer", "extract_answer", "gold_answer"]

Dataset = Literal["gsm8k", "math500"]
MAX_ANSWER_CHARS = 200
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


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


def extract_answer(response: str) -> str | None:
    """The response's final answer: its last ``\\boxed{}``, else its last ``####`` line."""
    boxed = _last_boxed(response)
    if boxed is not None:
        return boxed.strip()
    if "####" in response:
        return response.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
    return None


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
