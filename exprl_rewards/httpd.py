"""The reward server's HTTP layer: bounded threads, deadlines, and JSON errors.

:func:`make_handler` turns an :class:`App` (routes, a health report, a token and limits)
into a ``http.server`` handler; :class:`BoundedHTTPServer` serves it on at most
``slots`` threads. What a hostile or broken client can do to it is bounded:

- at most ``slots`` connections are served at once; a client past that gets a 503 at
  once, and a stalled one holds its slot only until the read deadline;
- headers and body must arrive within ``read_timeout`` seconds in all, however slowly
  they trickle (408); a missing, negative or non-numeric ``Content-Length`` is a 411 or
  400, a body over the limit a 413, and the connection is closed after each of these;
- a request refused for its path or its token has its body read and discarded first,
  so the next request on a keep-alive connection is read from the right place;
- text that is not valid Unicode (a lone surrogate escape) is a 400 naming the field;
- a client that goes away is one log line, never a traceback; small answers go out at
  once (no Nagle delay on keep-alive connections).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .jsonl import find_bad_string

__all__ = ["App", "BoundedHTTPServer", "ClientError", "make_handler"]

_log = logging.getLogger("exprl_rewards.serve")
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
Route = Callable[[dict[str, Any]], dict[str, Any]]


class ClientError(Exception):
    """A client's mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class App(Protocol):
    """What the handler serves."""

    token: str | None
    max_body_bytes: int
    read_timeout: float

    def routes(self) -> dict[str, Route]:
        """POST paths and the functions that answer them."""
        ...

    def health(self) -> dict[str, Any]:
        """The ``GET /health`` answer."""
        ...


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``slots`` of them; a client past that gets a 503."""

    daemon_threads = True
    request_queue_size = 256  # a trainer's workers connect in bursts

    def __init__(self, address: tuple[str, int], handler: Any, slots: int) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(slots)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                body = b'{"error": "the server is busy: all connection slots are taken"}'
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (*_GONE, TimeoutError)):
            _log.info("client %s went away: %s", client_address, error)
        else:
            _log.warning("request from %s failed: %r", client_address, error)


def make_handler(server: App) -> type[BaseHTTPRequestHandler]:
    """A request handler class that serves ``server``'s routes (see the module docs)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # small keep-alive answers go out at once
        timeout = server.read_timeout  # idle keep-alive connections, slow headers

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, allow_nan=False, default=str).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
            except _GONE as e:
                self.close_connection = True
                _log.info("client %s went away before its answer: %s", self.client_address, e)

        def _authorized(self) -> bool:
            if server.token is None:
                return True
            given = self.headers.get("Authorization", "")
            return hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode())

        def _length(self) -> int:
            value = self.headers.get("Content-Length")
            if value is None:
                self.close_connection = True
                raise ClientError(411, "a POST needs a Content-Length header")
            if not value.strip().isdigit():
                self.close_connection = True
                raise ClientError(400, f"Content-Length {value!r} is not a byte count")
            length = int(value)
            if length > server.max_body_bytes:
                self.close_connection = True
                raise ClientError(
                    413, f"body of {length} bytes; the limit is {server.max_body_bytes}"
                )
            return length

        def _body(self, length: int) -> bytes:
            """Read the body within the read deadline, however it trickles in."""
            deadline = time.monotonic() + server.read_timeout
            chunks: list[bytes] = []
            left = length
            try:
                while left > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    self.connection.settimeout(remaining)
                    chunk = self.rfile.read1(min(left, 1 << 16))
                    if not chunk:
                        self.close_connection = True
                        raise ClientError(400, "the body ended before Content-Length")
                    chunks.append(chunk)
                    left -= len(chunk)
            except TimeoutError:
                self.close_connection = True
                raise ClientError(
                    408, f"the body did not arrive within {server.read_timeout:g} s"
                ) from None
            finally:
                with contextlib.suppress(OSError):
                    self.connection.settimeout(server.read_timeout)
            return b"".join(chunks)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/health":
                self._send(200, server.health())
            else:
                self._send(404, {"error": f"no such endpoint: GET {self.path}"})

        def do_POST(self) -> None:
            routes = server.routes()
            try:
                length = self._length()
                raw = self._body(length)  # read even when refused: the next request
                route = routes.get(self.path.rstrip("/"))  # on this connection follows it
                if route is None:
                    raise ClientError(404, f"no such endpoint: POST {self.path}")
                if not self._authorized():
                    raise ClientError(401, "missing or wrong bearer token")
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise ClientError(400, f"body is not JSON: {e}") from None
                if not isinstance(body, dict):
                    raise ClientError(400, "body must be a JSON object")
                if (bad := find_bad_string(body)) is not None:
                    raise ClientError(
                        400, f"field {bad!r} has a lone surrogate escape, which is not text"
                    )
                self._send(200, _nan_to_none(route(body)))
            except ClientError as e:
                self._send(e.status, {"error": str(e)})
            except _GONE as e:
                self.close_connection = True
                _log.info("client %s went away: %s", self.client_address, e)
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
