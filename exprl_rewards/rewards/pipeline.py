"""The reward pipeline: a batch of rollouts in; scores, rewards and advantages out.

rollout -> slicer -> prompt -> judge -> parser -> calibrator -> rewards -> advantages

:class:`RewardPipeline` composes the parts, each a constructor argument whose default
is the released ExpRL setting:

======================  ==================================  ==========================
argument                default (released ExpRL)            alternatives
======================  ==================================  ==========================
``mode``                ``"process-segment"``               ``"outcome"``,
                                                            ``"process-prefix"``,
                                                            ``"process-growing"``,
                                                            ``"process-tagged"``
``template``            ``mode``'s reasoning template,      ``"<mode>-score-only"``
                        1-5 scale, "Score: N"               (logprob scoring), a file
``slicer``              ``"exprl"`` (``###``)               any preset or Slicer
``calibrator``          (N - 1) / 4                         a fitted calibrator
``outcome_estimator``   ``"grpo"``                          ``"drgrpo"``, ``"rloo"``
``process_estimator``   ``"delta"`` (DeltaNorm)             ``"end"``, ``"group"``,
                                                            ``"prefix"``, ``"rtg"``
``truncated``           ``"zero"``: reward 0, no judge      ``"judge"``, ``"unscored"``
``order``               ``"cache"`` (released: problem,     ``"released"``
                        reasoning, reference)
``min_mass``            0.5: logprobs refine a written      0 to 1; 1.01: the written
                        score when the digits hold half     number always (released:
                        the probability at its token        greedy parsed integer)
======================  ==================================  ==========================

Concurrency, retries, timeouts and caching belong to the judge (see
:class:`~exprl_rewards.judges.openai.OpenAIJudge`).

Nothing is dropped: every rollout comes back, scored or with the reason it is not
(an empty response, an empty reference, a judge failure, an unparseable answer). In process mode an
unscored segment masks its rollout's advantages, as released; its other segments keep
their scores for inspection.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, get_args

import numpy as np

from ..errors import ConfigError, InputError, unknown_name
from ..judges.base import DEFAULT_MIN_MASS, Judge, JudgeRequest, run_sync
from ..judges.guards import ContentGate, Guard, GuardHit, NeutralisedText, Neutraliser
from ..judges.score_guards import SecondLook, apply_score_guards
from ..judges.templates import PREFIX_MODES, JudgeTemplate, Mode, Order, get_template
from ..text.rollout import Rollout, Segment
from ..text.slicers import Slicer, get_slicer
from .advantages import OutcomeEstimator, ProcessEstimator, outcome_advantages, process_advantages
from .calibration import Calibrator, LinearCalibrator, probs_matrix
from .growing import judge_in_turns
from .results import BatchResult, RolloutResult, SegmentResult, rollout_result
from .tagged import expand, mark_steps, several

__all__ = ["BatchResult", "RewardPipeline", "RolloutResult", "SegmentResult"]

Truncated = Literal["zero", "judge", "unscored"]
Reduce = Literal["last", "mean", "min", "sum"]
THINK_END = "</think>"


# A judge that grades against nothing grades the prompt's wording: never asked.
EMPTY_REFERENCE = "empty reference: nothing to grade against"


def _calibration_reason(calibrator: Calibrator, raw: float | None) -> str:
    """Why a score the judge gave has no reward: the calibrator left it out."""
    name = getattr(calibrator, "strategy", None) or type(calibrator).__name__
    return f"calibration: {name} gives {'no score' if raw is None else f'score {raw:g}'} no reward"


class RewardPipeline:
    """Grade rollouts with a judge and turn the grades into advantages.

    Args:
        judge: any :class:`~exprl_rewards.judges.base.Judge`.
        mode: ``"outcome"``, ``"process-segment"`` (released), ``"process-prefix"``,
            ``"process-growing"`` (prefix scores from one growing conversation per
            rollout: :mod:`exprl_rewards.rewards.growing`) or ``"process-tagged"`` (every step
            in one request: :mod:`exprl_rewards.rewards.tagged`).
        template: a :class:`JudgeTemplate` or a built-in name; default: the mode's
            reasoning template.
        slicer: a :class:`~exprl_rewards.text.slicers.Slicer` or a preset name (process modes).
        calibrator: maps raw scores to [0, 1]; default (N - 1) / 4.
        outcome_estimator: ``"grpo"``, ``"drgrpo"`` or ``"rloo"`` (outcome mode).
        process_estimator: ``"delta"``, ``"end"``, ``"group"``, ``"prefix"`` or ``"rtg"``.
        estimator_options: keyword options for the estimator (``std``, ``singleton``,
            ``gamma``, ``normalize``...).
        reduce: how a process rollout's segment scores become its score: ``"last"``
            (default for prefix mode: the score of the whole rollout), ``"mean"``
            (default for segment mode), ``"min"``, or ``"sum"`` (the released
            ``is_process_sum``: in [0, K], not [0, 1]).
        truncated: a rollout cut at the policy's length limit: ``"zero"`` (released:
            reward 0, no judge call), ``"judge"`` (grade it like any other) or
            ``"unscored"``.
        order: ``"cache"`` or ``"released"`` prompt order.
        prefill: use the template's assistant prefill (the judge must support it).
        min_mass: the probability the valid score tokens must hold at the written
            score's token for the logprob-weighted value to replace it
            (:data:`~exprl_rewards.judges.base.DEFAULT_MIN_MASS`).
        think_strip: the judge sees only what follows the policy's last ``</think>``
            (released ``think_strip``); a response without one is graded as an empty
            answer. The thinking tokens share the first step's advantage.
        last_step: process modes: a rule-based verifier's outcome for a rollout (e.g. 1.0
            if its final answer is right), used as s_K by DeltaNorm, EndNorm and the prefix
            variant (released ``which_last_step="outcome"``); None masks the rollout.
        guards: defences against responses that game the judge
            (:func:`~exprl_rewards.judges.guards.get_guards`): a content gate gives a response
            with nothing in it the scale's minimum without a judge call, a neutraliser
            removes grader-directed spans from what the judge sees. Default: none here;
            the score CLI and the server turn both on.
    """

    def __init__(
        self,
        judge: Judge,
        *,
        mode: Mode = "process-segment",
        template: JudgeTemplate | str | None = None,
        slicer: Slicer | str = "exprl",
        calibrator: Calibrator | None = None,
        outcome_estimator: OutcomeEstimator = "grpo",
        process_estimator: ProcessEstimator = "delta",
        estimator_options: Mapping[str, Any] | None = None,
        reduce: Reduce | None = None,
        truncated: Truncated = "zero",
        order: Order = "cache",
        prefill: bool = True,
        min_mass: float = DEFAULT_MIN_MASS,
        think_strip: bool = False,
        last_step: Callable[[Rollout], float | None] | None = None,
        guards: Sequence[Guard] = (),
    ) -> None:
        self.judge = judge
        self.template = (
            get_template(template or mode) if not isinstance(template, JudgeTemplate) else template
        )
        if self.template.mode != mode:
            raise ConfigError(
                f"template {self.template.name!r} is for {self.template.mode!r}, not mode {mode!r}"
            )
        self.mode = mode
        self.slicer = get_slicer(slicer) if isinstance(slicer, str) else slicer
        self.calibrator = calibrator or LinearCalibrator()
        self.outcome_estimator, self.process_estimator = outcome_estimator, process_estimator
        # checked now, not at the first batch: a bad name must stop a run before it starts
        if outcome_estimator not in get_args(OutcomeEstimator):
            raise unknown_name("outcome estimator", outcome_estimator, get_args(OutcomeEstimator))
        if process_estimator not in get_args(ProcessEstimator):
            raise unknown_name("process estimator", process_estimator, get_args(ProcessEstimator))
        self.estimator_options = dict(estimator_options or {})
        self.reduce: Reduce = reduce or ("last" if mode in PREFIX_MODES else "mean")
        if self.reduce not in get_args(Reduce):
            raise ConfigError(
                f"reduce must be one of {', '.join(get_args(Reduce))}, got {self.reduce!r}"
            )
        if truncated not in ("zero", "judge", "unscored"):
            raise ConfigError(f"truncated must be 'zero', 'judge' or 'unscored', got {truncated!r}")
        self.truncated, self.order, self.prefill = truncated, order, prefill
        if not 0.0 <= min_mass <= 1.01:
            raise ConfigError(f"min_mass must be between 0 and 1, got {min_mass!r}")
        self.min_mass = min_mass
        self.think_strip, self.last_step = think_strip, last_step
        self.guards = tuple(guards)

    def graded_start(self, rollout: Rollout) -> int:
        """Where the text the judge sees starts: past the last ``</think>`` (think_strip)."""
        if not self.think_strip:
            return 0
        end = rollout.response.rfind(THINK_END)
        return len(rollout.response) if end < 0 else end + len(THINK_END)

    def segments(self, rollout: Rollout) -> tuple[Segment, ...]:
        """The segments graded for ``rollout``: the whole response in outcome mode.

        With ``think_strip`` the first segment also holds the thinking before the
        graded text (segments cover the response, for token alignment).
        """
        text = rollout.response
        if self.mode == "outcome" or (self.think_strip and self.graded_start(rollout) == len(text)):
            return (Segment(0, 0, len(text), text),) if text or self.think_strip else ()
        start = self.graded_start(rollout)
        split_tokens = getattr(self.slicer, "split_tokens", None)
        if split_tokens is not None and rollout.token_offsets is not None:
            shifted = [(a - start, b - start) for a, b in rollout.token_offsets if b > start]
            parts = split_tokens(text[start:], shifted)  # released token-boundary cuts
        else:
            parts = self.slicer.split(text[start:])
        return tuple(
            Segment(p.index, 0 if p.index == 0 else p.start + start, p.end + start,
                    text[: p.end + start] if p.index == 0 else p.text)
            for p in parts
        )  # fmt: skip

    def guard(
        self, rollout: Rollout
    ) -> tuple[tuple[GuardHit, ...], NeutralisedText, GuardHit | None]:
        """The guards' verdicts on one rollout: every hit, the response as the judge will
        see it, and the content gate's hit (the rollout is then not judged)."""
        graded = self.graded_start(rollout)
        view, hits, gated = NeutralisedText(rollout.response), [], None
        for g in self.guards:
            if isinstance(g, ContentGate):
                gated = g.check(rollout.response[graded:], rollout.question)
                hits += [gated] if gated is not None else []
            elif isinstance(g, Neutraliser):
                hit, view = g.apply(rollout.response)
                hits += [hit] if hit is not None else []
        return tuple(hits), view, gated

    def requests(
        self,
        rollout: Rollout,
        segments: Sequence[Segment],
        view: NeutralisedText | None = None,
        order: Order | None = None,
    ) -> list[JudgeRequest]:
        """The judge requests for one rollout, one per segment; ``view``: the response as
        the judge sees it (the neutraliser's), with the original offsets; ``order``: the
        prompt order, if not the pipeline's (a second look)."""
        graded = self.graded_start(rollout)
        text = rollout.response
        cut = (view or NeutralisedText(text)).slice
        base = {"question": rollout.question, "reference": rollout.reference,
                "response": cut(graded, len(text))}  # fmt: skip
        if self.mode == "process-tagged":  # every step in one request
            steps = [cut(max(s.start, graded), s.end) for s in segments]
            request = JudgeRequest.from_template(
                self.template, key=f"{rollout.id}#all", prefill=self.prefill,
                min_mass=self.min_mass, order=order or self.order, step=mark_steps(steps),
                step_index=len(steps), num_steps=len(steps), **base,
            )  # fmt: skip
            listed = replace(several(request, len(steps)), question=rollout.question,
                             steps=tuple(steps))  # fmt: skip
            return [listed]
        out = []
        for s in segments:
            variables: dict[str, Any] = dict(base, order=order or self.order)
            if self.mode != "outcome":
                variables.update(
                    step=cut(max(s.start, graded), s.end),
                    previous=cut(graded, max(s.start, graded)),
                    step_index=s.index + 1,
                    num_steps=len(segments),
                )
            request = JudgeRequest.from_template(
                self.template,
                key=f"{rollout.id}#{s.index}",
                prefill=self.prefill,
                min_mass=self.min_mass,
                **variables,
            )
            if self.mode == "process-growing" and s.index > 0:  # a turn of the conversation
                turn = self.template.turn(
                    step=variables["step"], response=base["response"],
                    step_index=s.index + 1, num_steps=len(segments),
                )  # fmt: skip
                request = replace(request, messages=(turn,))
            out.append(request)
        return out

    def score_sync(self, rollouts: Sequence[Rollout]) -> BatchResult:
        """:meth:`score` from synchronous code (also inside a running event loop)."""
        return run_sync(lambda: self.score(rollouts))

    async def score(self, rollouts: Sequence[Rollout]) -> BatchResult:
        """Grade a batch and compute advantages over its groups.

        Groups are taken from ``group_id`` within this batch: pass all rollouts of a
        prompt together, or group statistics are computed over the part given.
        """
        start = time.perf_counter()
        ids = [r.id for r in rollouts]
        if len(set(ids)) != len(ids):
            dup = next(i for i, n in Counter(ids).items() if n > 1)
            raise InputError(
                f"rollout id {dup!r} appears more than once in the batch; ids must be unique"
            )
        # Per rollout: its segments, its first request, and why it is not judged:
        # None (judged), "zero" (truncated: reward 0), or an unscored reason.
        plans: list[tuple[tuple[Segment, ...], int, str | None]] = []
        requests: list[JudgeRequest] = []
        units = 0  # judgements before each rollout's first: one per segment judged
        hits: list[tuple[GuardHit, ...]] = []
        views: list[NeutralisedText | None] = []
        for r in rollouts:
            segments = self.segments(r)
            fired, view, gated = self.guard(r)
            hits.append(fired)
            skip: str | None = None
            if not segments and gated is None:
                skip = "empty response"
            elif not r.reference.strip():
                skip = EMPTY_REFERENCE
            elif r.truncated and self.truncated != "judge":
                skip = "zero" if self.truncated == "zero" else "truncated"
            elif gated is not None:  # the scale's minimum, or unscored: never judged
                segments = segments or (Segment(0, 0, len(r.response), r.response),)
                skip = "zero" if self._gate_minimum() else f"guard: {gated.detail}"
            plans.append((segments, units, skip))
            if skip is None:
                units += len(segments)
                requests.extend(self.requests(r, segments, view))
                views.append(view)
            else:
                views.append(None)
        second = self._second_requests(rollouts, plans, views)
        every = requests + [q for qs in second.values() for q in qs]
        if self.mode == "process-growing":  # one conversation per rollout (and look)
            sizes = [len(seg) for seg, _, skip in plans if skip is None]
            sizes += [len(qs) for qs in second.values()]
            starts = np.cumsum([0, *sizes]).tolist()
            chains = [every[a:b] for a, b in itertools.pairwise(starts)]
            judgements = await judge_in_turns(self.judge, chains)
        else:
            judgements = await self.judge.judge(every) if every else []
            judgements = expand(judgements, every)  # one per segment (process-tagged)
        looked = sum(len(plans[i][0]) for i in second)
        if len(judgements) != units + looked:
            raise RuntimeError(
                f"judge returned {len(judgements)} judgements for {units + looked} segments"
            )
        raw = np.array(
            [np.nan if j.score is None else j.score for j in judgements], dtype=np.float64
        )
        low, high = self.template.low, self.template.high
        probs = None
        if any(j.probs is not None for j in judgements):
            probs = probs_matrix([j.probs for j in judgements], high - low + 1)
        calibrated = self.calibrator(raw, low=low, high=high, probs=probs) if raw.size else raw
        looks, at = {}, units
        for i in second:
            k = len(plans[i][0])
            looks[i], at = calibrated[at : at + k].tolist(), at + k
        extra = tuple(judgements[units:])
        judgements, calibrated = judgements[:units], calibrated[:units]
        rows: list[list[float]] = []
        seg_reasons: list[list[str | None]] = []
        for segments, first, skip in plans:
            k = len(segments)
            if skip == "zero":
                rows.append([0.0] * k)
                seg_reasons.append([None] * k)
            elif skip is not None:
                rows.append([np.nan] * k)
                seg_reasons.append([skip] * k)
            else:
                rows.append(calibrated[first : first + k].tolist())
                seg_reasons.append([
                    j.reason or (_calibration_reason(self.calibrator, j.score)
                                 if np.isnan(c) else None)
                    for j, c in zip(judgements[first : first + k], calibrated[first : first + k],
                                    strict=True)
                ])  # fmt: skip
        graded = [r.response[self.graded_start(r) :] for r in rollouts]
        judged = [skip is None for _, _, skip in plans]
        after = apply_score_guards(self.guards, rollouts, graded, judged, rows, seg_reasons,
                                   looks, self.order)  # fmt: skip
        hits = [a + b for a, b in zip(hits, after, strict=True)]
        group_ids = [r.group_id for r in rollouts]
        if self.mode == "outcome":
            flat = [row[0] if row else np.nan for row in rows]
            outcome = outcome_advantages(
                flat, group_ids, estimator=self.outcome_estimator, **self.estimator_options
            )
            seg_adv = [[float(a)] * len(row) for a, row in zip(outcome.values, rows, strict=True)]
        else:
            last = None
            if self.last_step is not None:  # released which_last_step="outcome"
                last = [np.nan if (v := self.last_step(r)) is None else v for r in rollouts]
            process = process_advantages(rows, self.process_estimator, group_ids=group_ids,
                                         last=last, **self.estimator_options)  # fmt: skip
            seg_adv = [list(map(float, row)) for row in process.values.rows()]
        results = []
        for r, (segments, first, skip), row, reasons, adv, fired in zip(
            rollouts, plans, rows, seg_reasons, seg_adv, hits, strict=True
        ):
            used = judgements[first : first + len(segments)] if skip is None else []
            result = replace(rollout_result(r, segments, row, reasons, adv, tuple(used),
                                            outcome=self.mode == "outcome", reduce=self.reduce),
                             guards=fired)  # fmt: skip
            if self.last_step is not None and result.reason is None and np.isnan(adv).all():
                result = replace(result, score=None, reason="last step: no verifier outcome")
            results.append(result)
        return BatchResult(tuple(results), time.perf_counter() - start, extra)

    def _second_requests(
        self,
        rollouts: Sequence[Rollout],
        plans: Sequence[tuple[tuple[Segment, ...], int, str | None]],
        views: Sequence[NeutralisedText | None],
    ) -> dict[int, list[JudgeRequest]]:
        """A second look's requests (the other prompt order), by rollout index."""
        look = next((g for g in self.guards if isinstance(g, SecondLook)), None)
        if look is None:
            return {}
        other = look.other_order(self.order)
        return {
            i: self.requests(r, segments, view, order=other)
            for i, (r, (segments, _, skip), view) in enumerate(
                zip(rollouts, plans, views, strict=True)
            )
            if skip is None and look.chosen(r.id)
        }

    def _gate_minimum(self) -> bool:
        gate = next(g for g in self.guards if isinstance(g, ContentGate))
        return gate.action == "minimum"
