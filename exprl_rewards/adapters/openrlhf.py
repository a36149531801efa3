"""OpenRLHF: its remote reward protocol, as OpenRLHF 0.11 speaks it, in and out.

OpenRLHF's ``SingleTurnAgentExecutor`` posts ``{"query": [q], "prompts": [p],
"labels": [l]}`` to ``--reward.remote_url``, one sample per request, where ``q`` is
``decode(prompt_ids + action_ids, skip_special_tokens=False)``, and turns every value of
the answer's ``rewards``, ``scores`` and ``extra_logs`` into a tensor: a ``null``
anywhere kills the rollout. So:

- **labels** (``--data.label_key``) may be the reference as text, a number (a GSM8K
  answer), or an object, given as JSON or as a JSON string, with ``solution`` (or
  ``reference``) and an optional ``question``. Text that starts with ``{`` but is not
  a JSON object is a reference like any other;
- **question**: the label's ``question`` when it has one, else the last user turn of the
  chat-templated prompt (:func:`~exprl_rewards.adapters.chat_text.question_from_prompt`);
- **response**: the query after its prompt, or, when the prompt is not a prefix of the
  query (OpenRLHF cuts long prompts from the left), the whole query; special tokens
  removed either way (:func:`~exprl_rewards.adapters.chat_text.clean_response`);
- **unscored** samples (an empty reference is one: it is never judged) get a number from
  the ``unscored`` policy and ``extra_logs.exprl_unscored = 1``; every value returned is
  a number. Under ``"group-mean"``, the mean is over the *request's* samples of the same
  prompt: OpenRLHF sends one sample per request, so there it is always ``neutral``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..judges.guards import GUARDS
from ..rewards.pipeline import EMPTY_REFERENCE, RolloutResult
from ..text.rollout import Rollout
from .chat_text import clean_response, question_from_prompt
from .common import UnscoredPolicy, fill_unscored

__all__ = ["OpenRLHFBatch", "openrlhf_answer", "openrlhf_batch", "read_label"]


@dataclass(frozen=True)
class OpenRLHFBatch:
    """One request's samples: the rollouts to judge, and the samples that are not judged."""

    rollouts: tuple[Rollout, ...]
    skipped: dict[int, str]  # sample index -> why it is unscored without a judge call
    prompt_matched: tuple[bool, ...]  # the prompt was a prefix of the query
    groups: tuple[str, ...]


def _strings(body: dict[str, Any], key: str, n: int | None = None) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"field {key!r} must be a list of strings")
    if n is not None and len(value) != n:
        raise InputError(f"field {key!r} has {len(value)} items, 'query' has {n}")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any, i: int) -> str:
    """A numeric label as text; NaN and infinities (``1e400``) are no reference."""
    if not math.isfinite(value):
        raise InputError(
            f"sample {i}: label {value!r} is not a finite number, so there is no reference"
            " to grade against; send the reference solution as text"
        )
    return str(value)


def read_label(label: Any, i: int) -> tuple[str, str | None]:
    """``(reference, question or None)`` from one label."""
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            parsed = json.loads(label)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            label = parsed
    if isinstance(label, dict):
        reference = label.get("solution", label.get("reference"))
        question = label.get("question")
        if _number(reference):
            reference = _finite(reference, i)
        if not isinstance(reference, str) or not isinstance(question, (str, type(None))):
            raise InputError(
                f"sample {i}: a JSON label needs 'solution' (or 'reference') and an optional"
                f" 'question' as strings, got {json.dumps(label)[:120]}"
            )
        return reference, question
    if isinstance(label, str):
        return label, None
    if _number(label):
        return _finite(label, i), None
    raise InputError(f"sample {i}: a label must be text, a number or an object, got {label!r:.80}")


def openrlhf_batch(body: dict[str, Any]) -> OpenRLHFBatch:
    """Read one ``/get_reward`` body; raises :class:`InputError` naming the bad field."""
    queries = _strings(body, "query")
    prompts = _strings(body, "prompts", len(queries))
    labels = body.get("labels")
    if not isinstance(labels, list) or len(labels) != len(queries):
        raise InputError(f"field 'labels' must be a list of {len(queries)} labels")
    rollouts, skipped, matched = [], {}, []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels, strict=True)):
        reference, question = read_label(label, i)
        prefix = bool(prompt) and query.startswith(prompt)
        matched.append(prefix)
        if not reference.strip():
            skipped[i] = EMPTY_REFERENCE
            continue
        rollouts.append(
            Rollout(
                id=str(i),
                group_id=prompt,
                question=question if question is not None else question_from_prompt(prompt),
                reference=reference,
                response=clean_response(query[len(prompt) :] if prefix else query),
            )
        )
    return OpenRLHFBatch(tuple(rollouts), skipped, tuple(matched), tuple(prompts))


def openrlhf_answer(
    batch: OpenRLHFBatch,
    results: Sequence[RolloutResult],
    unscored: UnscoredPolicy = "group-mean",
    neutral: float = 0.5,
) -> dict[str, Any]:
    """The answer OpenRLHF reads: numbers only, unscored samples filled and flagged
    (``exprl_unscored``; ``exprl_backend_failed`` when the judge never answered)."""
    judged = iter(results)
    every = [
        RolloutResult(str(i), group, None, batch.skipped[i], None, ())
        if i in batch.skipped
        else next(judged)
        for i, group in enumerate(batch.groups)
    ]
    rewards = fill_unscored(every, unscored, neutral)
    return {
        "rewards": rewards,
        "scores": rewards,
        "extra_logs": {
            "exprl_unscored": [float(r.score is None) for r in every],
            # the judge never answered: no verdict, where exprl_unscored may be a parse
            "exprl_backend_failed": [float(r.backend_failed) for r in every],
            "exprl_prompt_matched": [float(m) for m in batch.prompt_matched],
            # the guards that fired (exprl_rewards.judges.guards), per sample
            **{
                f"exprl_guard_{name.replace('-', '_')}": [
                    float(any(h.guard == name for h in r.guards)) for r in every
                ]
                for name in GUARDS
            },
        },
    }
