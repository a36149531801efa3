"""``python -m exprl_rewards.serve``: an HTTP reward server (OpenRLHF's remote RM protocol).

Endpoints:

``POST /get_reward``  OpenRLHF (``--reward.remote_url http://HOST:PORT/get_reward``):
    takes ``{"query": [...], "prompts": [...], "labels": [...]}``, where each query is
    the chat-templated prompt + response and each label the hidden reference (text, a
    number, or an object with ``solution`` and ``question``); answers numbers only:
    ``{"rewards": [...], "scores": [...], "extra_logs": {...}}``
    (:mod:`exprl_rewards.adapters.openrlhf`). OpenRLHF sends no token: serve it on
    loopback without ``--token``.
``POST /slime``  slime (``--rm-type remote_rm --rm-url http://HOST:PORT/slime
    --reward-key score``): takes one sample, ``{"prompt", "response", "label"}``, and
    answers ``{"score": ..., "exprl_unscored": 0|1, "exprl_raw": ...}``
    (:mod:`exprl_rewards.adapters.slime`).
``POST /score``  native: ``{"rollouts": [{"id", "group_id", "question", "reference",
    "response"}, ...]}`` -> per-rollout score, reason, advantage and segments.
``GET /health``  ``{"status": "ok", "judge": ...}`` when the judge passes its check (a
    model list and a one-line request, at most once every ``--health-interval``
    seconds); a 503 ``{"status": "unavailable", "error": ...}`` naming the judge when not.

All requests share one event loop, hence the judge's concurrency budget and cache.
Binds 127.0.0.1 unless told otherwise; ``--token`` (or ``$EXPRL_SERVE_TOKEN``) requires
``Authorization: Bearer TOKEN``. Errors are JSON ``{"error": ...}`` with a 4xx status
for the client's mistakes (400 bad JSON, fields or ``Content-Length``, 401 token, 404,
408 a body not received in time, 411 no length, 413 too large), 503 when all
connection slots are taken, and 504 when judging takes longer than
``--request-timeout`` (default 170 s, inside OpenRLHF's 180 s client timeout).

Hostile clients cost bounded resources: at most ``max_connections`` connections are
served at once (each on a thread); headers and body must arrive within
``--read-timeout`` seconds in all, however slowly they trickle; a refused request's
body is read and discarded so a keep-alive connection stays in step; a client that
goes away is one log line. Text that is not valid Unicode (a lone surrogate escape) is
a 400 naming the field.

OpenRLHF needs a number per sample: an unscored one gets a neutral value (see
:mod:`exprl_rewards.adapters.common`), and ``extra_logs["exprl_unscored"]`` flags it.
A judge that never answered is no verdict: every such sample is logged with its reason
and flagged in ``extra_logs["exprl_backend_failed"]``, and a batch in which *no* judged
sample got an answer is a 503 naming the judge, never a page of neutral values. The
server checks its judge before it listens (``main`` exits 3 when the judge is down).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .adapters.common import UnscoredPolicy, fill_unscored, judge_silence
from .adapters.openrlhf import openrlhf_answer, openrlhf_batch
from .adapters.slime import slime_answer, slime_rollout
from .cli.parser import ExpRLParser
from .errors import ConfigError, ExpRLError, InputError, JudgeUnavailable
from .io.httpd import BoundedHTTPServer, ClientError, Route, make_handler
from .judges.health import check_judge, describe_judge
from .rewards.pipeline import BatchResult, RewardPipeline
from .text.rollout import Rollout

__all__ = ["RewardServer", "main"]

_log = logging.getLogger(__name__)
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class RewardServer:
    """The reward server: a pipeline on a background event loop, behind ``http.server``.

    Args:
        pipeline: the judge, mode, template and calibration.
        host, port: where to listen (port 0: a free one).
        token: required bearer token, or None.
        max_body_bytes, max_batch: request limits (413 beyond them).
        request_timeout: seconds before an answer becomes a 504.
        unscored, neutral: the value an unscored sample gets.
        read_timeout: seconds a request's headers and body may take to arrive, in all.
        max_connections: connections served at once; more get a 503.
        health_interval: seconds a judge check answers ``/health`` before the next.
    """

    def __init__(
        self,
        pipeline: RewardPipeline,
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        token: str | None = None,
        max_body_bytes: int = 32 << 20,
        max_batch: int = 4096,
        request_timeout: float = 170.0,
        unscored: UnscoredPolicy = "group-mean",
        neutral: float = 0.5,
        read_timeout: float = 30.0,
        max_connections: int = 64,
        health_interval: float = 10.0,
    ) -> None:
        if not math.isfinite(neutral):
            raise ConfigError(f"the neutral value {neutral!r} is not a finite number")
        self.pipeline, self.token = pipeline, token
        self.max_body_bytes, self.max_batch = max_body_bytes, max_batch
        self.request_timeout, self.unscored, self.neutral = request_timeout, unscored, neutral
        self.read_timeout, self.health_interval = read_timeout, health_interval
        self._health_lock = threading.Lock()
        self._health: tuple[float, str | None] | None = None  # (when, error) of the last check
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._serving = False
        self.httpd = BoundedHTTPServer((host, port), make_handler(self), max_connections)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start_loop(self) -> None:
        """Start the judging loop (once), before or without serving."""
        if not self._loop_thread.is_alive():
            self._loop_thread.start()

    def start(self) -> RewardServer:
        """Serve on background threads; returns self."""
        self.start_loop()
        self._serving = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted."""
        self.start_loop()
        self._serving = True
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving, then stop and close the judging loop."""
        if self._serving:  # shutdown() waits for a serve_forever that never ran
            self.httpd.shutdown()
        self.httpd.server_close()
        if self._loop_thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(timeout=10)
        if not self.loop.is_running():
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def __enter__(self) -> RewardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _score(self, rollouts: Sequence[Rollout]) -> BatchResult:
        future = asyncio.run_coroutine_threadsafe(self.pipeline.score(rollouts), self.loop)
        try:
            return future.result(timeout=self.request_timeout)
        except FutureTimeout:
            future.cancel()
            raise ClientError(
                504, f"judging took longer than {self.request_timeout:g} s; try a smaller batch"
            ) from None

    def check_judge(self) -> None:
        """Run the judge's check on the server's loop.

        Raises:
            JudgeUnavailable: the judge cannot grade (see :func:`check_judge`).
        """
        future = asyncio.run_coroutine_threadsafe(check_judge(self.pipeline.judge), self.loop)
        try:
            future.result(timeout=self.request_timeout)
        except FutureTimeout:
            future.cancel()
            raise JudgeUnavailable(
                f"the {describe_judge(self.pipeline.judge)} did not answer its check within"
                f" {self.request_timeout:g} s"
            ) from None

    def _judged(self, results: Sequence[Any], skipped: int = 0) -> None:
        """Log every sample the judge never answered; a 503 when none was answered."""
        for r in results:
            if r.backend_failed:
                _log.warning("judge backend failure, sample %s: %s", r.id, r.reason)
        if silent := judge_silence(results):
            raise ClientError(
                503,
                f"the {describe_judge(self.pipeline.judge)} answered none of the"
                f" {len(silent)} samples it was asked ({silent[0].reason}); no rewards."
                " Check the judge server",
            )

    def openrlhf(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /get_reward`` (see :mod:`exprl_rewards.adapters.openrlhf`)."""
        try:
            batch = openrlhf_batch(body)
        except InputError as e:
            raise ClientError(400, str(e)) from None
        if len(batch.groups) > self.max_batch:
            raise ClientError(413, f"{len(batch.groups)} samples; the limit is {self.max_batch}")
        results = self._score(batch.rollouts).results if batch.rollouts else ()
        self._judged(results)
        return openrlhf_answer(batch, results, self.unscored, self.neutral)

    def slime(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /slime`` (see :mod:`exprl_rewards.adapters.slime`)."""
        missing = [k for k in ("prompt", "response", "label") if k not in body]
        if missing:
            raise ClientError(400, f"field {missing[0]!r} is missing; slime posts prompt, "
                              "response and label")  # fmt: skip
        try:
            rollout = slime_rollout(body["prompt"], body["response"], body["label"])
        except InputError as e:
            raise ClientError(400, str(e)) from None
        (result,) = self._score([rollout]).results
        self._judged([result])
        (value,) = fill_unscored([result], self.unscored, self.neutral)
        return slime_answer(value, result)

    def native(self, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("rollouts")
        if not isinstance(items, list):
            raise ClientError(400, "field 'rollouts' must be a list of objects")
        if len(items) > self.max_batch:
            raise ClientError(413, f"{len(items)} rollouts; the limit is {self.max_batch}")
        rollouts = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ClientError(400, f"rollouts[{i}] must be an object")
            try:
                rollouts.append(
                    Rollout(
                        id=str(item.get("id", i)), group_id=str(item.get("group_id", i)),
                        question=item.get("question", ""), reference=item["reference"],
                        response=item["response"],
                    )
                )  # fmt: skip
            except KeyError as e:
                raise ClientError(400, f"rollouts[{i}]: field {e.args[0]!r} is missing") from None
            except InputError as e:
                raise ClientError(400, f"rollouts[{i}]: {e}") from None
        try:
            batch = self._score(rollouts)
        except InputError as e:
            raise ClientError(400, str(e)) from None
        self._judged(batch.results)
        return {
            "results": [
                {
                    "id": r.id, "group_id": r.group_id, "score": r.score, "reason": r.reason,
                    "advantage": r.advantage,
                    "segments": [
                        {"start": s.start, "end": s.end, "score": s.score, "raw": s.raw,
                         "reason": s.reason, "advantage": s.advantage}
                        for s in r.segments
                    ],
                }
                for r in batch.results
            ],
            "summary": batch.summary(),
        }  # fmt: skip

    def routes(self) -> dict[str, Route]:
        """POST paths and the functions that answer them."""
        return {"/get_reward": self.openrlhf, "/slime": self.slime, "/score": self.native}

    def health(self) -> dict[str, Any]:
        """``GET /health``: ok only while the judge passes its check (re-run at most
        every ``health_interval`` seconds); else a 503 naming the judge."""
        with self._health_lock:
            now = time.monotonic()
            if self._health is None or now - self._health[0] >= self.health_interval:
                try:
                    self.check_judge()
                    self._health = (now, None)
                except JudgeUnavailable as e:
                    _log.warning("health check: %s", e)
                    self._health = (now, str(e))
            error = self._health[1]
        if error is not None:
            raise ClientError(503, error)
        judge = self.pipeline.judge
        return {
            "status": "ok",
            "mode": self.pipeline.mode,
            "template": self.pipeline.template.name,
            "judge": f"{getattr(judge, 'backend', '?')}:{getattr(judge, 'model', '?')}",
        }


def _unscored_policy(value: str) -> UnscoredPolicy:
    """``--unscored``: 'group-mean' or a finite number (a trainer cannot use NaN or inf)."""
    if value == "group-mean":
        return "group-mean"
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not 'group-mean' or a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    return number


def _parser() -> argparse.ArgumentParser:
    from .cli.judge_args import add_judge_arguments
    from .judges.templates import DEFAULT_MODE, MODES, TEMPLATES
    from .text.slicers import PRESETS

    p = ExpRLParser(
        prog="python -m exprl_rewards.serve",
        description="Serve ExpRL judge rewards over HTTP (OpenRLHF remote reward protocol).",
    )
    p.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="(default: 8787)")
    p.add_argument(
        "--token",
        default=os.environ.get("EXPRL_SERVE_TOKEN"),
        help="a bearer token every request must carry (default: $EXPRL_SERVE_TOKEN; none)",
    )
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help="what the judge scores")
    p.add_argument("--template", help=f"a built-in ({', '.join(TEMPLATES)}) or a .jinja file")
    p.add_argument(
        "--slicer",
        default="exprl",
        choices=sorted(PRESETS),
        help="step slicer for process modes ('exprl': '###' steps, as released)",
    )
    p.add_argument("--calibration", metavar="FILE", help="a calibrator saved by the audit")
    p.add_argument(
        "--unscored",
        default="group-mean",
        type=_unscored_policy,
        help="the reward an unscored sample gets: 'group-mean' (its group's scored mean,"
        " else neutral) or a finite number (default: group-mean)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=32 << 20,
        help="larger request bodies get a 413 (default: %(default)s)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=4096,
        help="samples per request; more get a 413 (default: %(default)s)",
    )
    p.add_argument(
        "--health-interval",
        type=float,
        default=10.0,
        help="seconds between judge checks behind GET /health (default: %(default)s)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=170.0,
        help="seconds judging one request may take in all before a 504 (default: 170)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        help="seconds a request's headers and body may take to arrive (default: 30)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=64,
        help="connections served at once; more get a 503 (default: 64)",
    )
    add_judge_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; return the exit code."""

    from .cli.judge_args import default_template, make_judge
    from .judges.cache import JudgeCache
    from .judges.guards import get_guards
    from .judges.templates import template_named
    from .rewards.calibration import load_calibrator

    args = _parser().parse_args(argv)
    try:
        cache = None if args.no_cache else JudgeCache(args.cache)
        template: Any = args.template or default_template(args, args.mode)
        if template:
            template = template_named(template, mode=args.mode)
        pipeline = RewardPipeline(
            make_judge(args, cache), mode=args.mode, template=template, slicer=args.slicer,
            calibrator=load_calibrator(args.calibration) if args.calibration else None,
            prefill=not args.no_prefill, min_mass=args.min_mass, guards=get_guards(args.guards),
        )  # fmt: skip
        server = RewardServer(
            pipeline, host=args.host, port=args.port, token=args.token,
            max_body_bytes=args.max_body_bytes, max_batch=args.max_batch,
            request_timeout=args.request_timeout, unscored=args.unscored,
            read_timeout=args.read_timeout, max_connections=args.max_connections,
            health_interval=args.health_interval,
        )  # fmt: skip
    except (ExpRLError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.no_judge_check:
        server.start_loop()
        try:
            server.check_judge()
        except JudgeUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            server.close()
            return 3
    log = getattr(server.pipeline.judge, "engine_log", None)
    print(
        f"exprl-rewards: serving on {server.url} (POST /get_reward, /slime, /score; GET /health)"
        + (f"; engine log: {log}" if log is not None else ""),
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
