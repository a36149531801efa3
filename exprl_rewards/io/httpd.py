"""The reward server's HTTP layer: bounded threads, deadlines, and JSON errors.

:func:`make_handler` turns an :class:`App` (routes, a health report, a token and limits)
into a ``http.server`` handler; :class:`BoundedHTTPServer` serves it on at most
``slots`` threads. What a hostile or broken client can do to it is bounded:

- at most ``slots`` connections are served at once; a client past that gets a 503 at
  once, and a stalled one holds its slot only until the read deadline;
- a request, its line, headers and body together, must arrive within ``read_timeout``
  seconds of the moment the server starts reading it, however slowly it trickles: a
  watchdog thread cuts the connection of a client whose headers are not in by then
  (per-read socket timeouts let a byte every few seconds hold a slot forever), and a
  body not in by then is a 408; an idle keep-alive connection is closed at the same
  deadline. A missing, negative or non-numeric ``Content-Length`` is a 411 or
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
import socket
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


class Watchdog:
    """Cuts connections whose request did not arrive by its deadline.

    A thread checks the armed connections every ``tick`` seconds and shuts down the
    reading side of each one past its deadline: the handler's blocked read then ends,
    whatever per-read timeout the socket has.
    """

    def __init__(self, tick: float = 0.1) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        self._tick = tick
        threading.Thread(target=self._run, daemon=True, name="exprl-http-watchdog").start()

    def arm(self, connection: socket.socket, deadline: float) -> None:
        with self._lock:
            self._deadlines[connection] = deadline

    def disarm(self, connection: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(connection, None)

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                late = [c for c, d in self._deadlines.items() if d <= now]
                for c in late:
                    del self._deadlines[c]
            for c in late:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RD)
                _log.info("a request did not arrive in time; its connection was cut")


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``slots`` of them; a client past that gets a 503."""

    daemon_threads = True
    request_queue_size = 256  # a trainer's workers connect in bursts

    def __init__(self, address: tuple[str, int], handler: Any, slots: int) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(slots)
        self.watchdog = Watchdog()

    def server_close(self) -> None:
        self.watchdog.close()
        super().server_close()

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

        def handle_one_request(self) -> None:
            # One deadline for the request line, the headers and the body.
            self.deadline = time.monotonic() + server.read_timeout
            watchdog: Watchdog = self.server.watchdog  # type: ignore[attr-defined]
            watchdog.arm(self.connection, self.deadline)
            try:
                super().handle_one_request()
            finally:
                watchdog.disarm(self.connection)

        def parse_request(self) -> bool:
            # Past the deadline, what was read was cut short by the watchdog: answer 408
            # rather than parse a partial request line or headers.
            if not self._late() and super().parse_request() and not self._late():
                self.server.watchdog.disarm(self.connection)  # type: ignore[attr-defined]
                return True  # the body's reads keep to the same deadline
            return False

        def _late(self) -> bool:
            if time.monotonic() < self.deadline:
                return False
            self.request_version, self.close_connection = "HTTP/1.1", True
            self.command, self.requestline = "", ""
            message = f"the request did not arrive within {server.read_timeout:g} s"
            self._send(408, {"error": message})
            return True

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
            """Read the body within the request's deadline, however it trickles in."""
            deadline = self.deadline
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
            if self.path.rstrip("/") != "/health":
                self._send(404, {"error": f"no such endpoint: GET {self.path}"})
                return
            try:
                self._send(200, server.health())
            except ClientError as e:  # the judge behind the server is down: not healthy
                self._send(e.status, {"status": "unavailable", "error": str(e)})

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
                    bad = find_bad_string(body)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise ClientError(400, f"body is not JSON: {e}") from None
                except RecursionError:
                    raise ClientError(400, "body is nested too deep; flatten it") from None
                if not isinstance(body, dict):
                    raise ClientError(400, "body must be a JSON object")
                if bad is not None:
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
