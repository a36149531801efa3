"""A discriminative process reward model as the judge: every step of a rollout scored in
one forward pass.

Many users score steps with a PRM, not a generative judge. :class:`PRMJudge` takes the
requests of ``mode="process-tagged"`` (one request a rollout, the step texts in
:attr:`~exprl_rewards.judges.base.JudgeRequest.steps`), lays the rollout out in its
model's convention, runs the model once, and reads a probability at each step's
position:

- ``"qwen"`` (Qwen2.5-Math-PRM): the chat template with the steps as the assistant's
  answer, each step followed by the separator token ``<extra_0>``; the model's reward
  head gives two logits per position, and the step's score is the positive class's
  probability at its separator. Loaded with ``AutoModel`` (``trust_remote_code``).
- ``"shepherd"`` (Math-Shepherd): ``question step1 ки\\nstep2 ки\\n...``, a causal LM; the
  step's score is ``p("+") / (p("+") + p("-"))`` predicted at the last token of its tag.

A step's position is found from character offsets (a fast tokenizer's offset mapping),
so a tag that splits into several tokens still maps to its step. Untrusted text cannot
forge a step boundary: the separator and the tag are removed from step texts first.

A probability p becomes the score ``low + p (high - low)`` on the request's scale, so the
default calibration gives p back and the rest of the pipeline (calibration, estimators,
adapters, CLI) is the generative judge's. **A PRM does not read the hidden reference**:
it grades the steps alone, which is what such a model was trained to do.

The backend is transformers on this machine (``torch`` is an optional extra). No PRM
checkpoint can be installed here: the plumbing is tested on the embedded SmolLM2, which
is **not** a PRM, under the Shepherd convention, and the Qwen convention's step
positions on SmolLM2's tokenizer with ``<extra_0>`` added as a special token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, InputError, JudgeUnavailable
from .base import Judgement, JudgeRequest

__all__ = ["QWEN_SYSTEM", "Layout", "PRMJudge", "layout"]

Convention = Literal["qwen", "shepherd"]
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SEPARATOR, TAG = "<extra_0>", "ки"


@dataclass(frozen=True)
class Layout:
    """A rollout as its PRM reads it: token ids, and the token where each step is scored."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]
    text: str


def _clean(step: str, marks: Sequence[str]) -> str:
    for mark in marks:
        step = step.replace(mark, "")
    return step.strip()


def layout(
    tokenizer: Any,
    question: str,
    steps: Sequence[str],
    convention: Convention = "qwen",
    *,
    separator: str = SEPARATOR,
    tag: str = TAG,
    system: str = QWEN_SYSTEM,
) -> Layout:
    """The model input for ``steps`` and the token index of each step's score.

    Raises:
        InputError: a step's position is not one token of the input (the tokenizer has
            no offsets, or the separator is not one special token).
    """
    clean = [_clean(s, (separator, tag)) for s in steps]
    if convention == "qwen":
        answer = "".join(f"{s}{separator}" for s in clean)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]  # fmt: skip
        text = str(tokenizer.apply_chat_template(messages, tokenize=False))
        start = text.index(answer)
        ends, at = [], start
        for s in clean:
            at += len(s) + len(separator)
            ends.append(at)
    elif convention == "shepherd":
        text = f"{question} " + "".join(f"{s} {tag}\n" for s in clean)
        ends, at = [], len(question) + 1
        for s in clean:
            at += len(s) + 1 + len(tag)
            ends.append(at)
            at += 1
    else:
        raise ConfigError(f"unknown PRM convention {convention!r}; known: qwen, shepherd")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    positions = []
    for end in ends:  # the token that holds the mark's last character
        index = next((i for i, (a, b) in enumerate(offsets) if a < end <= b), None)
        if index is None:
            raise InputError(f"no token ends the step mark at character {end} of the input")
        positions.append(index)
    return Layout(tuple(encoded["input_ids"]), tuple(positions), text)


class PRMJudge:
    """Score each step of a rollout with a process reward model, one forward pass a
    rollout (see the module docs).

    Args:
        model: a model directory (or hub name, where a hub is reachable).
        convention: ``"qwen"`` (reward head, ``<extra_0>`` separators) or ``"shepherd"``
            (causal LM, ``+``/``-`` at a step tag).
        positive, negative: the Shepherd convention's tokens.
        separator, tag, system: the conventions' strings.
        name: the model's name in judgements and cache keys.
        dtype: the weights' dtype (float32: bf16 is emulated, and slow, on CPUs
            without it).
    """

    backend = "prm"
    batches = True  # a batch is worked through in this process

    def __init__(
        self,
        model: str | Path,
        *,
        convention: Convention = "qwen",
        positive: str = "+",
        negative: str = "-",
        separator: str = SEPARATOR,
        tag: str = TAG,
        system: str = QWEN_SYSTEM,
        name: str | None = None,
        dtype: str = "float32",
    ) -> None:
        if convention not in ("qwen", "shepherd"):
            raise ConfigError(f"unknown PRM convention {convention!r}; known: qwen, shepherd")
        self.path, self.convention = str(model), convention
        self.positive, self.negative = positive, negative
        self.separator, self.tag, self.system = separator, tag, system
        self.model, self.dtype = name or Path(self.path).name, dtype
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None
        self.forwards = 0  # forward passes run (one a rollout)

    def loaded(self) -> tuple[Any, Any]:
        """The tokenizer and the model, loaded on first use."""
        with self._lock:
            if self._loaded is None:
                import torch
                from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=True)
                dtype = getattr(torch, self.dtype)
                if self.convention == "qwen":
                    model = AutoModel.from_pretrained(self.path, trust_remote_code=True,
                                                      dtype=dtype)  # fmt: skip
                else:
                    model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype)
                self._loaded = (tokenizer, model.eval())
            return self._loaded

    async def check(self) -> dict[str, Any]:
        """Load the model and score a one-step rollout; what identifies the judge.

        Raises:
            JudgeUnavailable: the model cannot be loaded or scores nothing.
        """
        probe = JudgeRequest(messages=(), key="check", scores=1, question="What is 1 + 1?",
                             steps=("1 + 1 = 2.",))  # fmt: skip
        try:
            (judgement,) = await self.judge([probe])
        except (OSError, ValueError, ImportError) as e:
            raise JudgeUnavailable(f"the PRM at {self.path} cannot be loaded: {e}") from None
        if judgement.score is None:
            raise JudgeUnavailable(f"the PRM at {self.path} scored nothing: {judgement.reason}")
        return {"backend": self.backend, "model": self.model, "convention": self.convention}

    async def judge(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """One judgement per request, each step's score in its parts."""
        return await asyncio.to_thread(self.judge_blocking, requests)

    def judge_blocking(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """The same as :meth:`judge`, blocking the calling thread."""
        return [self._one(r) for r in requests]

    def _probabilities(self, tokenizer: Any, model: Any, shape: Layout) -> list[float]:
        import torch

        with torch.inference_mode():
            output = model(input_ids=torch.tensor([shape.ids]))
        self.forwards += 1
        logits = output[0] if isinstance(output, tuple) else output.logits
        at = logits[0, list(shape.positions)].float()
        if self.convention == "qwen":
            return at.softmax(-1)[:, 1].tolist()  # type: ignore[no-any-return]
        pair = [tokenizer.convert_tokens_to_ids(t) for t in (self.positive, self.negative)]
        return at[:, pair].softmax(-1)[:, 0].tolist()  # type: ignore[no-any-return]

    def _one(self, request: JudgeRequest) -> Judgement:
        common: dict[str, Any] = {"backend": self.backend, "model": self.model,
                                  "key": request.key, "low": request.low,
                                  "high": request.high, "attempts": 1}  # fmt: skip
        if not request.steps:
            return Judgement(None, "prm: the request holds no steps (use process-tagged)", **common)
        tokenizer, model = self.loaded()
        try:
            shape = layout(tokenizer, request.question, request.steps, self.convention,
                           separator=self.separator, tag=self.tag, system=self.system)  # fmt: skip
        except InputError as e:
            return Judgement(None, f"prm: {e}", **common)
        probabilities = self._probabilities(tokenizer, model, shape)
        span = request.high - request.low
        text = "P(step is right): " + " ".join(f"{p:.3f}" for p in probabilities)
        parts = []
        for k, p in enumerate(probabilities):
            own = {**common, "key": f"{request.key}/{k}"}
            own.update({"prompt_tokens": len(shape.ids)} if k == 0 else
                       {"attempts": 0, "asked": False})  # fmt: skip
            value = request.low + p * span
            parts.append(Judgement(score=value, reason=None, expected=value, mass=1.0,
                                   text=text, **own))  # fmt: skip
        return Judgement(score=parts[-1].score, reason=None, text=text, parts=tuple(parts),
                         prompt_tokens=len(shape.ids), **common)  # fmt: skip
