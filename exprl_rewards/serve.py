"""``python -m exprl_rewards.serve``: an HTTP reward server (OpenRLHF's remote RM protocol).

Endpoints:

``POST /get_reward``  OpenRLHF (``--remote_rm_url http://HOST:PORT/get_reward``): takes
    ``{"query": [...], "prompts": [...], "labels": [...]}``, where each query is prompt +
    response and each label is the hidden reference solution (or a JSON object string
    with ``solution`` and ``question``); answers ``{"rewards": [...], "scores": [...],
    "extra_logs": {...}}``.
``POST /score``  native: ``{"rollouts": [{"id", "group_id", "question", "reference",
    "response"}, ...]}`` -> per-rollout score, reason, advantage and segments.
``GET /health``  ``{"status": "ok", ...}``.

All requests share one event loop, hence the judge's concurrency budget and cache.
Binds 127.0.0.1 unless told otherwise; ``--token`` (or ``$EXPRL_SERVE_TOKEN``) requires
``Authorization: Bearer TOKEN``. Errors are JSON ``{"error": ...}`` with a 4xx status
for the client's mistakes (400 bad JSON or fields, 401 token, 404, 413 too large) and
504 when judging takes longer than ``--request-timeout`` (default 170 s, inside
OpenRLHF's older 180 s client timeout).

OpenRLHF needs a number per sample: an unscored one gets a neutral value (see
:mod:`exprl_rewards.adapters.common`), and ``extra_logs["exprl_unscored"]`` flags it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .adapters.common import UnscoredPolicy, fill_unscored
from .errors import ExpRLError, InputError
from .pipeline import BatchResult, RewardPipeline
from .rollout import Rollout

__all__ = ["RewardServer", "main"]


class _ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _strings(body: dict[str, Any], key: str, n: int | None = None) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _ClientError(400, f"field {key!r} must be a list of strings")
    if n is not None and len(value) != n:
        raise _ClientError(400, f"field {key!r} has {len(value)} items, 'query' has {n}")
    return value


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a trainer's workers connect in bursts


class RewardServer:
    """The reward server: a pipeline on a background event loop, behind ``http.server``.

    Args:
        pipeline: the judge, mode, template and calibration.
        host, port: where to listen (port 0: a free one).
        token: required bearer token, or None.
        max_body_bytes, max_batch: request limits (413 beyond them).
        request_timeout: seconds before an answer becomes a 504.
        unscored, neutral: the value an unscored sample gets.
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
    ) -> None:
        self.pipeline, self.token = pipeline, token
        self.max_body_bytes, self.max_batch = max_body_bytes, max_batch
        self.request_timeout, self.unscored, self.neutral = request_timeout, unscored, neutral
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.httpd = _HTTPServer((host, port), self._handler())

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RewardServer:
        """Serve on background threads; returns self."""
        self._loop_thread.start()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted."""
        self._loop_thread.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving, then stop and close the judging loop."""
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
            raise _ClientError(
                504, f"judging took longer than {self.request_timeout:g} s; try a smaller batch"
            ) from None

    def openrlhf(self, body: dict[str, Any]) -> dict[str, Any]:
        queries = _strings(body, "query")
        prompts = _strings(body, "prompts", len(queries))
        labels = _strings(body, "labels", len(queries))
        if len(queries) > self.max_batch:
            raise _ClientError(413, f"{len(queries)} samples; the limit is {self.max_batch}")
        rollouts = []
        for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels, strict=True)):
            if not query.startswith(prompt):
                raise _ClientError(400, f"sample {i}: the query does not start with its prompt")
            reference, question = label, prompt
            if label.lstrip().startswith("{"):
                try:
                    info = json.loads(label)
                    reference = str(info["solution"])
                    question = str(info.get("question", prompt))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise _ClientError(
                        400, f"sample {i}: a JSON label needs a 'solution' field"
                    ) from None
            rollouts.append(
                Rollout(
                    id=str(i), group_id=prompt, question=question, reference=reference,
                    response=query[len(prompt) :],
                )
            )  # fmt: skip
        batch = self._score(rollouts)
        rewards = fill_unscored(batch.results, self.unscored, self.neutral)
        unscored = [float(r.score is None) for r in batch.results]
        return {
            "rewards": rewards,
            "scores": rewards,
            "extra_logs": {
                "exprl_unscored": unscored,
                "exprl_score": [r.score for r in batch.results],
            },
        }

    def native(self, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("rollouts")
        if not isinstance(items, list):
            raise _ClientError(400, "field 'rollouts' must be a list of objects")
        if len(items) > self.max_batch:
            raise _ClientError(413, f"{len(items)} rollouts; the limit is {self.max_batch}")
        rollouts = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise _ClientError(400, f"rollouts[{i}] must be an object")
            try:
                rollouts.append(
                    Rollout(
                        id=str(item.get("id", i)), group_id=str(item.get("group_id", i)),
                        question=item.get("question", ""), reference=item["reference"],
                        response=item["response"],
                    )
                )  # fmt: skip
            except KeyError as e:
                raise _ClientError(400, f"rollouts[{i}]: field {e.args[0]!r} is missing") from None
            except InputError as e:
                raise _ClientError(400, f"rollouts[{i}]: {e}") from None
        try:
            batch = self._score(rollouts)
        except InputError as e:
            raise _ClientError(400, str(e)) from None
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

    def health(self) -> dict[str, Any]:
        judge = self.pipeline.judge
        return {
            "status": "ok",
            "mode": self.pipeline.mode,
            "template": self.pipeline.template.name,
            "judge": f"{getattr(judge, 'backend', '?')}:{getattr(judge, 'model', '?')}",
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload, allow_nan=False, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if server.token is None:
                    return True
                given = self.headers.get("Authorization", "")
                return hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode())

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/health":
                    self._send(200, server.health())
                else:
                    self._send(404, {"error": f"no such endpoint: GET {self.path}"})

            def do_POST(self) -> None:
                routes = {"/get_reward": server.openrlhf, "/score": server.native}
                try:
                    route = routes.get(self.path.rstrip("/"))
                    if route is None:
                        raise _ClientError(404, f"no such endpoint: POST {self.path}")
                    if not self._authorized():
                        raise _ClientError(401, "missing or wrong bearer token")
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > server.max_body_bytes:
                        self.close_connection = True
                        raise _ClientError(
                            413, f"body of {length} bytes; the limit is {server.max_body_bytes}"
                        )
                    try:
                        body = json.loads(self.rfile.read(length))
                    except (json.JSONDecodeError, UnicodeDecodeError) as e:
                        raise _ClientError(400, f"body is not JSON: {e}") from None
                    if not isinstance(body, dict):
                        raise _ClientError(400, "body must be a JSON object")
                    self._send(200, _nan_to_none(route(body)))
                except _ClientError as e:
                    self._send(e.status, {"error": str(e)})
                except Exception as e:  # the judge's own failures are per-sample, not here
                    self._send(500, {"error": f"{type(e).__name__}: {e}"})

        return Handler


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def _parser() -> argparse.ArgumentParser:
    from .cli.judge_args import add_judge_arguments
    from .templates import MODES, TEMPLATES

    p = argparse.ArgumentParser(
        prog="python -m exprl_rewards.serve",
        description="Serve ExpRL judge rewards over HTTP (OpenRLHF remote reward protocol).",
    )
    p.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="(default: 8787)")
    p.add_argument("--token", default=os.environ.get("EXPRL_SERVE_TOKEN"), help="bearer token")
    p.add_argument("--mode", choices=MODES, default="outcome", help="(default: outcome)")
    p.add_argument("--template", help=f"a built-in ({', '.join(TEMPLATES)}) or a .jinja file")
    p.add_argument("--slicer", default="exprl")
    p.add_argument("--calibration", metavar="FILE", help="a calibrator saved by the audit")
    p.add_argument("--unscored", default="group-mean", help="'group-mean' or a number")
    p.add_argument("--max-body-bytes", type=int, default=32 << 20)
    p.add_argument("--max-batch", type=int, default=4096)
    p.add_argument("--request-timeout", type=float, default=170.0)
    add_judge_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; return the exit code."""
    from pathlib import Path

    from .calibration import load_calibrator
    from .cli.judge_args import make_judge
    from .judges.cache import JudgeCache
    from .templates import TEMPLATES, load_template

    args = _parser().parse_args(argv)
    try:
        cache = None if args.no_cache else JudgeCache(args.cache)
        template: Any = args.template
        if template and template not in TEMPLATES:
            template = load_template(Path(template), mode=args.mode)
        pipeline = RewardPipeline(
            make_judge(args, cache), mode=args.mode, template=template, slicer=args.slicer,
            calibrator=load_calibrator(args.calibration) if args.calibration else None,
            prefill=not args.no_prefill, min_mass=args.min_mass,
        )  # fmt: skip
        unscored: UnscoredPolicy = (
            "group-mean" if args.unscored == "group-mean" else float(args.unscored)
        )
        server = RewardServer(
            pipeline, host=args.host, port=args.port, token=args.token,
            max_body_bytes=args.max_body_bytes, max_batch=args.max_batch,
            request_timeout=args.request_timeout, unscored=unscored,
        )  # fmt: skip
    except (ExpRLError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"exprl-rewards: serving on {server.url} (POST /get_reward, /score; GET /health)",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
