"""The pipeline a score command line names, and the settings stored with every row.

``--route released`` builds a :class:`~exprl_rewards.rewards.routing.RoutedPipeline` instead of
one pipeline: each row goes to its domain's pipeline by the released rule (its
``ability`` and ``extra_info``), and its record names the route. Shared by the
single-machine path and the Ray actors, so both build and record alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io.jsonl import FieldMap, RowError, SourceRow
from ..judges.cache import JudgeCache
from ..judges.guards import get_guards
from ..judges.templates import DEFAULT_MODE, Mode, template_named
from ..rewards.calibration import NORM_STRATEGIES, NormStrategyCalibrator, load_calibrator
from ..rewards.pipeline import RewardPipeline
from ..rewards.routing import RoutedPipeline, released_route, released_routes, route_problem
from ..text.rollout import Rollout
from .judge_args import default_template, is_embedded, make_judge

__all__ = ["AnyPipeline", "build_pipeline", "route_errors", "run_settings", "with_routes"]

AnyPipeline = RewardPipeline | RoutedPipeline


def _is_strategy(calibration: str | None) -> bool:
    """``--calibration`` names a released norm_strategy (not a calibrator file)."""
    return calibration in NORM_STRATEGIES and not Path(calibration).exists()


def _common_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "order": args.order,
        "truncated": args.truncated,
        "prefill": not args.no_prefill,
        "min_mass": args.min_mass,
    }
    if _is_strategy(args.calibration):
        options["calibrator"] = NormStrategyCalibrator(args.calibration)
    elif args.calibration:
        options["calibrator"] = load_calibrator(args.calibration)
    if args.think_strip:
        options["think_strip"] = True
    options["guards"] = get_guards(args.guards)
    return options


def build_pipeline(args: argparse.Namespace) -> AnyPipeline:
    """The judge and pipeline (or routed pipelines) the options name."""
    if args.route:
        given = [f"--{name}" for name in ("mode", "template", "estimator", "reduce", "slicer")
                 if getattr(args, name) is not None]  # fmt: skip
        if given:
            raise ConfigError(
                f"--route {args.route} picks each row's mode and template; drop {', '.join(given)}"
            )
    cache = None if args.no_cache else JudgeCache(args.cache)
    judge = make_judge(args, cache)
    options = _common_options(args)
    if args.route:
        score_only = args.score_only or is_embedded(args)
        return RoutedPipeline(released_routes(judge, score_only=score_only, **options))
    prm = getattr(args, "prm", None)  # a PRM scores every step in one pass: process-tagged
    mode: Mode = args.mode or ("process-tagged" if prm else DEFAULT_MODE)
    template = args.template or default_template(args, mode)
    if template:
        template = template_named(template, mode=mode, score_only=args.score_only)
    options.update(mode=mode, template=template, slicer=args.slicer or "exprl")
    if args.reduce:
        options["reduce"] = args.reduce
    if args.estimator:
        options["outcome_estimator" if mode == "outcome" else "process_estimator"] = args.estimator
    return RewardPipeline(judge, **options)


def _pipeline_settings(
    pipeline: RewardPipeline, slicer: str, calibration: str | None
) -> dict[str, Any]:
    judge = pipeline.judge
    sampling_of = getattr(judge, "sampling", None)
    outcome = pipeline.mode == "outcome"
    return {
        "mode": pipeline.mode,
        "template": pipeline.template.id,
        "slicer": None if outcome else slicer,
        "order": pipeline.order,
        "estimator": pipeline.outcome_estimator if outcome else pipeline.process_estimator,
        "reduce": pipeline.reduce,
        "truncated": pipeline.truncated,
        "calibration": calibration,
        "judge": f"{getattr(judge, 'backend', '?')}:{getattr(judge, 'model', '?')}",
        # which model answers under that name, and where (a server's own report)
        "judge_identity": identity_of()
        if callable(identity_of := getattr(judge, "identity", None))
        else None,
        "sampling": sampling_of() if callable(sampling_of) else None,
        "prefill": pipeline.prefill,
        "min_mass": pipeline.min_mass,
        "guards": [g.spec for g in pipeline.guards],
        # only when set: rows written before the option existed resume as before
        **({"think_strip": True} if pipeline.think_strip else {}),
    }


def run_settings(pipeline: AnyPipeline, args: argparse.Namespace) -> dict[str, Any]:
    """Everything that shapes a row's scores and advantages; stored in every row, and a
    resume with other settings is refused (see :mod:`exprl_rewards.cli.output`)."""
    calibration = None
    if _is_strategy(args.calibration):
        calibration = args.calibration
    elif args.calibration:
        calibration = hashlib.sha256(Path(args.calibration).read_bytes()).hexdigest()[:16]
    # Which input field is the question, the reference, the response... shapes every
    # score too: a resume that reads the reference from another field is another run.
    fields = {name: getattr(args, f"{name}_field") for name in vars(FieldMap())}
    if args.route:
        fields.update(ability=args.ability_field, extra_info=args.extra_info_field)
    common = {"token_advantages": bool(args.token_advantages), "fields": fields}
    if isinstance(pipeline, RoutedPipeline):
        routes = {name: _pipeline_settings(p, "exprl", calibration)
                  for name, p in pipeline.routes.items()}  # fmt: skip
        return {"route": args.route, "routes": routes, **common}
    return {**_pipeline_settings(pipeline, args.slicer or "exprl", calibration), **common}


def with_routes(
    pipeline: AnyPipeline, rollouts: Sequence[Rollout]
) -> list[tuple[str | None, RewardPipeline]]:
    """Each rollout's route (None without routing) and the pipeline that grades it."""
    if isinstance(pipeline, RoutedPipeline):
        return [(name, pipeline.routes[name]) for name in pipeline.assign(rollouts)]
    return [(None, pipeline)] * len(rollouts)


def route_errors(rows: Sequence[SourceRow], field: str) -> list[RowError]:
    """Rows the released rule cannot route as meant (:func:`route_problem`), and every
    row of a group whose rows take different routes, as bad input naming the routes: a
    group's advantages need one pipeline."""
    routes: dict[str, dict[str, SourceRow]] = {}
    errors = []
    unroutable: dict[str, SourceRow] = {}
    for row in rows:
        if (problem := route_problem(row.rollout)) is not None:
            errors.append(RowError(row.path, row.line, field, problem, json.dumps(row.data)))
            unroutable.setdefault(row.rollout.group_id, row)
        routes.setdefault(row.rollout.group_id, {}).setdefault(released_route(row.rollout), row)
    for row in rows:  # a group is graded whole or not at all
        bad = unroutable.get(row.rollout.group_id)
        if bad is not None and bad is not row and route_problem(row.rollout) is None:
            message = f"its group's row {bad.path}:{bad.line} cannot be routed"
            errors.append(RowError(row.path, row.line, field, message, json.dumps(row.data)))
    for row in rows:
        taken = routes[row.rollout.group_id]
        if len(taken) > 1:
            where = ", ".join(f"{name!r} ({r.path}:{r.line})" for name, r in taken.items())
            message = (f"group {row.rollout.group_id!r} takes routes {where}; a group's"
                       " advantages need one route")  # fmt: skip
            errors.append(RowError(row.path, row.line, field, message, json.dumps(row.data)))
    return errors
