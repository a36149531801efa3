"""One training step, end to end: sample, reward, advantages, update, push.

Three engines, each for one reason:

- **the sampler** (:class:`~.sampler.Sampler`): vLLM in this process, so new weights are
  pushed into it after every update without a restart;
- **the judge** (Stage I): frozen base weights, as in the paper (the base model judges its
  own progress against the reference); by default a vLLM server on 127.0.0.1 started
  here, so it never sees a push and could serve other runs; or any OpenAI-compatible
  server (``judge.base_url``) for a bigger judge;
- **the reference** for the KL term: a frozen torch copy of the starting weights, so the
  KL compares the trainer's own numbers (no sampler/trainer mismatch inside it).

Rewards and advantages come from the library's :class:`~exprl_rewards.RewardPipeline`
(Stage I: outcome GRPO, or per-token process advantages from token offsets), or from
:func:`~.answers.check_answer` with GRPO over each group (Stage II). An unscored rollout
trains no token.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import OpenAIJudge, RewardPipeline, Rollout, outcome_advantages
from ..adapters.offsets import token_offsets
from ..judges.guards import get_guards
from ..rewards.batch_stats import scalar_metrics
from ..rewards.canaries import Canaries, HackAlarm, Watch
from ..text.answers import check_answer
from .config import TrainConfig
from .loss import policy_loss
from .policy import Batch, Policy
from .sampler import Sample
from .tasks import Task

__all__ = ["StepData", "make_judge", "make_watch", "reward_step", "train_step"]


# the released trainer's metrics, from the batch summary (see exprl_rewards.rewards.batch_stats)
TRAINING_METRICS = ("raw_score_counts", "step_score_mean", "steps_per_response",
                    "groups_all_zero", "groups_all_one", "groups_mixed", "last_step_mean",
                    "last_step_std")  # fmt: skip


@dataclass
class StepData:
    """A sampled batch with its rewards: what the update consumes."""

    prompts: list[list[int]]  # per sample: its prompt's ids
    samples: list[Sample]
    advantages: list[np.ndarray]  # per sample, one per token; NaN where masked
    rewards: list[float | None]
    metrics: dict[str, Any]
    texts: list[str]  # per sample: the decoded response
    task_ids: list[str]  # per sample: its task's id


def make_judge(config: TrainConfig, model_dir: str, stack: ExitStack) -> RewardPipeline | None:
    """Stage I's reward pipeline, starting the local judge server if none is given."""
    if config.run.stage == "II":
        return None
    j = config.judge
    options: dict[str, Any] = {"slicer": j.slicer, "truncated": j.truncated}
    if j.estimator is not None:
        options["process_estimator"] = j.estimator
    if j.prm is not None:  # a process reward model in this process: no server
        from ..judges.prm import PRMJudge

        prm = PRMJudge(j.prm, convention=j.prm_convention)
        return RewardPipeline(prm, mode=j.mode, guards=get_guards(j.guards), **options)
    if j.base_url:
        urls, model = j.base_url, j.model
    else:
        from ..judges.local_model import VLLMServer

        log = config.run.out / "judge-server.log"
        server = stack.enter_context(
            VLLMServer(model_dir, extra_args=["--block-size", "32"], log_path=log)
        )
        urls, model = [server.url], server.model
    judge = OpenAIJudge(
        model, base_url=urls, top_logprobs=j.top_logprobs or None, concurrency=j.concurrency,
        timeout=j.timeout, constrain_scores=True, cache=j.cache,
    )  # fmt: skip
    return RewardPipeline(
        judge, mode=j.mode, template=j.template or f"{j.mode}-score-only",
        guards=get_guards(j.guards), **options,
    )  # fmt: skip


def make_watch(config: TrainConfig, pipeline: RewardPipeline) -> Watch:
    """Canaries and the hack alarm around Stage I's pipeline (``watch`` section)."""
    w = config.watch
    canaries = Canaries(w.canary_share, seed=config.run.seed) if w.canary_share else None
    return Watch(pipeline, canaries, HackAlarm(window=w.alarm_window, rise=w.alarm_rise))


def reward_step(
    config: TrainConfig,
    step: int,
    tasks: Sequence[Task],
    prompts: Sequence[list[int]],
    samples: Sequence[Sample],
    tokenizer: Any,
    watch: Watch | None,
) -> StepData:
    """Rewards and per-token advantages for one step's samples (Stage I: judged, with the
    step's canaries and the alarm's ``hack/`` metrics; Stage II: answers checked)."""
    n = config.sampler.rollouts_per_prompt
    texts = [token_offsets(tokenizer, s.token_ids) for s in samples]
    groups = [f"{step}-{s.prompt_index}" for s in samples]
    metrics: dict[str, Any] = {}
    if watch is not None:
        rollouts = [
            Rollout(
                id=f"{step}-{s.prompt_index}-{k % n}", group_id=g,
                question=tasks[s.prompt_index].question, reference=tasks[s.prompt_index].reference,
                response=text, token_ids=s.token_ids, token_offsets=tuple(offsets),
                truncated=s.truncated,
            )
            for k, (s, g, (text, offsets)) in enumerate(zip(samples, groups, texts, strict=True))
        ]  # fmt: skip
        batch, hack = watch.score_sync(rollouts, step + 1)  # as metrics.jsonl counts
        summary = batch.summary()
        guards = {k: v for k, v in scalar_metrics(batch.results).items() if k.startswith("guard/")}
        metrics.update(hack, **guards)
        metrics.update(
            judge_prompt_tokens=summary["prompt_tokens"],
            judge_completion_tokens=summary["completion_tokens"],
            unscored_reasons=summary["unscored_reasons"],
            **{k: summary[k] for k in TRAINING_METRICS},
        )
        rewards = [r.score for r in batch.results]
        advantages = []
        for r, s in zip(batch.results, samples, strict=True):
            adv = r.token_advantages
            advantages.append(np.full(len(s.token_ids), np.nan) if adv is None else adv)
    else:
        checked = [
            check_answer(text, tasks[s.prompt_index].gold, config.data.dataset)
            for s, (text, _) in zip(samples, texts, strict=True)
        ]
        rewards = list(checked)
        outcome = outcome_advantages(checked, groups)
        advantages = [
            np.full(len(s.token_ids), a) for s, a in zip(samples, outcome.values, strict=True)
        ]
    return StepData([list(prompts[s.prompt_index]) for s in samples], list(samples),
                    advantages, list(rewards), metrics, [text for text, _ in texts],
                    [tasks[s.prompt_index].id for s in samples])  # fmt: skip


def train_step(
    config: TrainConfig, policy: Policy, optimizer: torch.optim.Optimizer, data: StepData
) -> dict[str, float]:
    """One policy update on ``data`` (``optim.epochs`` passes); returns the update's metrics."""
    o, temperature = config.optim, config.sampler.temperature
    keep = [
        i for i, (s, a) in enumerate(zip(data.samples, data.advantages, strict=True))
        if s.token_ids and not np.isnan(a).all()
    ]  # fmt: skip
    batch_tokens = sum(int((~np.isnan(data.advantages[i])).sum()) for i in keep)
    out: dict[str, float] = {"trained_rollouts": len(keep), "trained_tokens": batch_tokens}
    if not keep:
        return out
    chunks = [keep[i : i + o.micro_batch] for i in range(0, len(keep), o.micro_batch)]
    old: dict[int, torch.Tensor] = {}
    totals = dict.fromkeys(("loss", "pg", "kl", "clipped", "ratio", "tis", "entropy"), 0.0)
    gaps: list[torch.Tensor] = []
    grad_norm = 0.0
    for epoch in range(o.epochs):
        for c, chunk in enumerate(chunks):
            batch = Batch(
                [data.prompts[i] for i in chunk], [data.samples[i].token_ids for i in chunk]
            )
            adv = torch.zeros(len(chunk), batch.T)
            sampler_logp = torch.zeros(len(chunk), batch.T)
            for row, i in enumerate(chunk):
                a = torch.from_numpy(np.nan_to_num(data.advantages[i], nan=0.0)).float()
                adv[row, : len(a)] = a
                sampler_logp[row, : len(a)] = torch.tensor(data.samples[i].logprobs)
            mask = batch.mask.clone()
            for row, i in enumerate(chunk):
                scored = torch.from_numpy(~np.isnan(data.advantages[i]))
                mask[row, : len(scored)] &= scored
            logp, entropy = policy.logprobs(batch, temperature)
            if epoch == 0:
                old[c] = logp.detach()
                gaps.append((old[c] - sampler_logp).abs()[batch.mask])
                totals["entropy"] += float(entropy[mask].sum())
            ref = policy.reference_logprobs(batch, temperature) if o.kl_coef > 0 else None
            terms = policy_loss(
                logp, old[c], sampler_logp, ref, adv, mask, batch_tokens=batch_tokens,
                clip_low=o.clip_low, clip_high=o.clip_high, tis_cap=o.tis_cap,
                kl_coef=o.kl_coef, kl_clamp=o.kl_clamp,
            )  # fmt: skip
            terms.loss.backward()  # type: ignore[no-untyped-call]
            if epoch == 0:
                for key, value in (("loss", float(terms.loss.detach())), ("pg", terms.pg_sum),
                                   ("kl", terms.kl_sum), ("clipped", terms.clipped),
                                   ("ratio", terms.ratio_sum), ("tis", terms.tis_sum)):  # fmt: skip
                    totals[key] += value
        params = policy.model.parameters()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    gap = torch.cat(gaps)
    out.update(
        loss=totals["loss"], pg_loss=totals["pg"] / batch_tokens, kl=totals["kl"] / batch_tokens,
        clip_frac=totals["clipped"] / batch_tokens, ratio_mean=totals["ratio"] / batch_tokens,
        tis_mean=totals["tis"] / batch_tokens, entropy=totals["entropy"] / batch_tokens,
        logprob_gap_mean=float(gap.mean()), logprob_gap_max=float(gap.max()),
        grad_norm=grad_norm,
    )  # fmt: skip
    return out


def batch_metrics(data: StepData) -> dict[str, Any]:
    """Reward, advantage and length statistics of a sampled batch."""
    scored = [r for r in data.rewards if r is not None]
    adv = np.concatenate([a[~np.isnan(a)] for a in data.advantages] or [np.zeros(0)])
    return {
        "reward_mean": float(np.mean(scored)) if scored else None,
        "reward_std": float(np.std(scored)) if scored else None,
        "unscored_rate": 1 - len(scored) / len(data.rewards),
        "adv_mean": float(adv.mean()) if adv.size else None,
        "adv_std": float(adv.std()) if adv.size else None,
        "adv_abs_mean": float(np.abs(adv).mean()) if adv.size else None,
        "response_tokens_mean": float(np.mean([len(s.token_ids) for s in data.samples])),
        "truncated_rate": float(np.mean([s.truncated for s in data.samples])),
        **data.metrics,
    }


def sample_rows(data: StepData, step: int, k: int) -> list[dict[str, Any]]:
    """The first ``k`` rollouts of a step for ``samples.jsonl``: what the reward paid for.

    ``advantages`` is run-length encoded, ``[[tokens, value], ...]`` (None: masked), so that
    a process run shows its per-step credit.
    """
    rows = []
    for i in range(min(k, len(data.samples))):
        runs: list[list[Any]] = []
        for a in data.advantages[i]:
            value = None if np.isnan(a) else round(float(a), 4)
            if runs and runs[-1][1] == value:
                runs[-1][0] += 1
            else:
                runs.append([1, value])
        s = data.samples[i]
        rows.append({"step": step, "task": data.task_ids[i], "reward": data.rewards[i],
                     "truncated": s.truncated, "tokens": len(s.token_ids),
                     "response": data.texts[i], "advantages": runs})  # fmt: skip
    return rows
