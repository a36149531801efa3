"""``python -m exprl_rewards.score IN -o OUT --ray [ADDRESS]``: the same scoring on Ray Data.

The driver does what the single-machine path does before any judge call (reads and
validates every row, reports bad rows by file:line:field, opens the output and learns
which ids are already written), then hands the work to Ray:

- **Whole groups travel together.** The driver cuts the pending rows into batches of
  complete groups (as the single-machine path does); one batch is one row of a Ray
  Dataset, so an actor always sees every rollout of a group and computes the same group
  advantages.
- **Actors hold judges.** ``map_batches`` runs a pool of ``--ray-actors`` actors of
  ``--ray-cpus`` / ``--ray-gpus`` each; each builds the pipeline from the same
  command-line settings once (a client of the ``--base-url`` servers, or a vLLM engine in
  the actor for ``--vllm-model`` and the embedded judge, on the GPUs Ray gives it) and
  grades a batch at a time. An actor size that no node of the cluster can hold is
  refused at once (Ray would wait forever). Actors on one node share the judge's SQLite
  cache file (WAL: safe for concurrent writers).
- **The driver writes.** Results stream back to the driver, which appends each row whose
  id is not written yet, flushed, exactly as the single-machine path does. A batch that
  Ray runs twice (a task retried after its actor died) cannot write a row twice, and a
  driver killed mid-run resumes from what its output holds.

Ray is an optional extra (``pip install 'exprl-rewards[ray]'``); nothing else imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import pickle
from collections.abc import Iterator
from typing import Any

from ..errors import ExpRLError, MissingExtraError
from ..io.jsonl import SourceRow
from ..rewards.results import BatchResult
from .failures import BackendFailures
from .output import Output
from .summary import Progress

__all__ = ["score_on_ray"]


class _Scorer:
    """A Ray Data actor: builds the pipeline once, grades one batch of groups per row.

    The run's options are class attributes of a subclass made per run (:func:`_bound`),
    not constructor arguments: Ray ships such a class by value with the actor.
    """

    args: argparse.Namespace
    settings: dict[str, Any]

    def __init__(self) -> None:
        from ..judges.health import check_judge_sync
        from .build import build_pipeline

        self.pipeline = build_pipeline(self.args)
        # The driver checked the judge; checking here too gives this judge the same identity
        # (the server's model root), hence the driver's cache keys. A judge that fails here
        # fails its requests, which the driver counts and stops on: an actor that raised
        # would be restarted by Ray forever.
        if not self.args.no_judge_check and hasattr(self.pipeline.judge, "check"):
            with contextlib.suppress(ExpRLError):
                check_judge_sync(self.pipeline.judge)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from .build import with_routes
        from .records import input_digest, record

        records, summaries = [], []
        for blob in batch["rows"]:
            rows: list[SourceRow] = pickle.loads(blob)
            rollouts = [r.rollout for r in rows]
            result = self.pipeline.score_sync(rollouts)
            out = []
            for row, res, (route, graded_by) in zip(
                rows, result.results, with_routes(self.pipeline, rollouts), strict=True
            ):
                data = dict(row.data)
                data[self.args.output_field] = record(
                    res,
                    graded_by,
                    self.args.token_advantages,
                    self.settings,
                    route=route,
                    digest=input_digest(row.rollout),
                )
                out.append(data)
            records.append(json.dumps(out))
            summaries.append(pickle.dumps(result))
        return {"records": records, "result": summaries}


def _bound(args: argparse.Namespace, settings: dict[str, Any]) -> type[_Scorer]:
    return type("Scorer", (_Scorer,), {"args": args, "settings": settings})


def _check_placeable(nodes: list[dict[str, Any]], cpus: float, gpus: float) -> None:
    """Refuse an actor size no live node can hold: Ray would wait for it forever."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in alive):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in alive)
    raise ExpRLError(
        f"no node of the Ray cluster can hold a judge actor of {cpus:g} CPU and {gpus:g} GPU"
        f" (nodes: {have or 'none'}); lower --ray-cpus / --ray-gpus, or add such a node"
    )


class _NoProgressBarNotice(logging.Filter):
    """Ray Data warns that its progress bars are off: this command shows its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")


def _dataset_rows(batches: list[list[SourceRow]]) -> list[dict[str, Any]]:
    return [{"rows": pickle.dumps(batch)} for batch in batches]


def _stream(
    args: argparse.Namespace, settings: dict[str, Any], batches: list[list[SourceRow]]
) -> Iterator[tuple[list[dict[str, Any]], BatchResult]]:
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise MissingExtraError("ray", "ray") from e
    address = None if args.ray == "local" else args.ray
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)  # fmt: skip
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    _check_placeable(nodes, args.ray_cpus, args.ray_gpus)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").addFilter(_NoProgressBarNotice())
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the output keeps the input's order
    context.enable_progress_bars = False
    dataset = ray.data.from_items(_dataset_rows(batches), override_num_blocks=len(batches))
    graded = dataset.map_batches(
        _bound(args, settings),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=args.ray_actors),
        num_cpus=args.ray_cpus,
        num_gpus=args.ray_gpus,
        # Ray Data's own defaults for actor pools are max_restarts=-1 and
        # max_task_retries=-1 (an actor that dies is replaced and its batch runs again);
        # passing them is deprecated in Ray 2.60. tests/test_ray_score.py kills an actor.
    )
    for row in graded.iter_rows():
        yield json.loads(row["records"]), pickle.loads(row["result"])


def score_on_ray(
    args: argparse.Namespace,
    settings: dict[str, Any],
    batches: list[list[SourceRow]],
    output: Output,
    progress: Progress,
    failures: BackendFailures,
    results: list[BatchResult],
) -> None:
    """Grade ``batches`` (whole groups each) on Ray; write each new row once, but no
    group the judge did not fully answer (``failures``)."""
    written_ids = set(output.done)
    for records, result in _stream(args, settings, batches):
        results.append(result)
        new = []
        for record in failures.keep(records):
            rid = record[args.output_field]["id"]
            if rid not in written_ids:
                written_ids.add(rid)
                new.append(record)
        output.write_rows(new)
        progress.update(len(new))
        failures.check()
