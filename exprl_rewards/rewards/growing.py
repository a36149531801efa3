"""process-growing: the judge reads a rollout step by step, in one conversation per
rollout that only grows.

Request 1 is the template's opening (instructions, problem, reference) with step 1.
Request k is request k - 1, then the judge's own answer to it (as an assistant turn),
then a user turn with step k (:meth:`~exprl_rewards.judges.templates.JudgeTemplate.turn`), then
the prefill. With prefix caching every request reuses everything before its new step:
the rollout is prefilled about once, plus a turn's few tokens and the part of a KV block
the cache cannot reuse, per step.

- Requests of one rollout go in order. Those of different rollouts go concurrently, each
  conversation at its own pace, or, for a judge that works in whole batches (the
  in-process vLLM engine: ``batches = True``), a round (step number) at a time.
- A request carries the earlier answers, so its cache key does too: a changed earlier
  score is another conversation.
- A step the judge gave no score ends its rollout's conversation: the rollout is
  unscored anyway, and its later steps are left unjudged with a reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from ..judges.base import Judge, Judgement, JudgeRequest
from ..judges.templates import ChatMessage

__all__ = ["UNJUDGED", "conversation", "judge_in_turns"]

UNJUDGED = "not judged: an earlier step of this conversation has no score"


def conversation(
    chain: Sequence[JudgeRequest], answers: Sequence[Judgement], k: int
) -> JudgeRequest:
    """Request ``k`` (0-based) of a rollout's conversation.

    ``chain[0]`` is the opening request; ``chain[j]`` for ``j >= 1`` holds only step
    ``j``'s user turn as its messages; ``answers`` are the judge's answers to requests
    ``0 .. k - 1``, whose texts (prefill included) become the assistant turns.
    """
    messages: list[ChatMessage] = list(chain[0].messages)
    for j in range(1, k + 1):
        messages.append({"role": "assistant", "content": answers[j - 1].text.strip()})
        messages.extend(chain[j].messages)
    return dataclasses.replace(chain[k], messages=tuple(messages))


def _unjudged(request: JudgeRequest) -> Judgement:
    return Judgement(None, UNJUDGED, key=request.key, low=request.low, high=request.high,
                     asked=False)  # fmt: skip


async def judge_in_turns(judge: Judge, chains: Sequence[Sequence[JudgeRequest]]) -> list[Judgement]:
    """Judge every conversation; the judgements in chain order, one per request."""
    if getattr(judge, "batches", False):
        answers = await _in_rounds(judge, chains)
    else:
        answers = list(await asyncio.gather(*(_alone(judge, chain) for chain in chains)))
    out: list[Judgement] = []
    for chain, got in zip(chains, answers, strict=True):
        out.extend(got)
        out.extend(_unjudged(request) for request in chain[len(got) :])
    return out


async def _alone(judge: Judge, chain: Sequence[JudgeRequest]) -> list[Judgement]:
    answers: list[Judgement] = []
    for k in range(len(chain)):
        (judgement,) = await judge.judge([conversation(chain, answers, k)])
        answers.append(judgement)
        if judgement.score is None:
            break
    return answers


async def _in_rounds(
    judge: Judge, chains: Sequence[Sequence[JudgeRequest]]
) -> list[list[Judgement]]:
    answers: list[list[Judgement]] = [[] for _ in chains]
    for k in range(max((len(c) for c in chains), default=0)):
        live = [i for i, c in enumerate(chains)
                if k < len(c) and (k == 0 or answers[i][-1].score is not None)]  # fmt: skip
        if not live:
            break
        judged = await judge.judge([conversation(chains[i], answers[i], k) for i in live])
        for i, judgement in zip(live, judged, strict=True):
            answers[i].append(judgement)
    return answers
