"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on cue.

The rollout text of a request carries its script: ``FAULT:429,500,ok`` answers the first
attempt with 429, the second with 500, and every later one normally. Attempts are
counted per distinct request body, so concurrent requests do not disturb each other.

Without a script, a request whose text holds ``[[score N]]`` marks is answered
"Score: N" for the last mark (``[[score none]]``: an answer with no score): a
deterministic judge for pipeline tests.

Behaviours: ``ok`` (a completion ending "Score: 4"), ``score7`` (an out-of-range score),
an HTTP status (``400``, ``401``, ``404``, ``429``, ``500``, ``503``), ``slow`` (answer
after 2 s), ``garbage`` (200 with a non-JSON body), ``empty`` (200 with no choices),
``truncated`` (a body shorter than its Content-Length, then close), and ``drop``
(close the connection without answering).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SCRIPT = re.compile(r"FAULT:([a-z0-9,]+)")
_MARK = re.compile(r"\[\[score (\d|none)\]\]")


def completion(content: str, logprobs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "fault",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }
    if logprobs:
        # One token per character, with the digits 3/4/5 as alternatives at the score.
        tokens = []
        for ch in content:
            top = [{"token": ch, "logprob": -0.1, "bytes": list(ch.encode())}]
            if ch.isdigit():
                top = [
                    {"token": d, "logprob": lp, "bytes": [ord(d)]}
                    for d, lp in (("4", -0.5), ("5", -1.5), ("3", -2.0))
                ]
            tokens.append(
                {
                    "token": ch,
                    "logprob": top[0]["logprob"],
                    "bytes": list(ch.encode()),
                    "top_logprobs": top,
                }
            )
        body["choices"][0]["logprobs"] = {"content": tokens}
    return body


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        # The client may give up first (a timeout test): then there is nobody to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer()

    def _answer(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = json.loads(raw)
        text = " ".join(m.get("content", "") for m in request.get("messages", []))
        match = _SCRIPT.search(text)
        script = match.group(1).split(",") if match else ["ok"]
        key = hashlib.sha256(raw).hexdigest()
        with self.server.lock:
            attempt = self.server.attempts.get(key, 0)
            self.server.attempts[key] = attempt + 1
            self.server.requests += 1
        action = script[min(attempt, len(script) - 1)]
        logprobs = bool(request.get("logprobs"))
        marks = _MARK.findall(text)
        if action == "ok" and marks:  # a deterministic judge: the last [[score N]] mark
            answer = (
                "I cannot grade this."
                if marks[-1] == "none"
                else f"Reasoning: as marked.\nScore: {marks[-1]}"
            )
            self._send(200, json.dumps(completion(answer, logprobs)).encode())
        elif action == "ok":
            self._send(200, json.dumps(completion("Reasoning: fine.\nScore: 4", logprobs)).encode())
        elif action == "score7":
            self._send(
                200, json.dumps(completion("Reasoning: great.\nScore: 7", logprobs)).encode()
            )
        elif action.isdigit():
            error = {
                "error": {"message": f"injected {action}", "type": "fault", "code": int(action)}
            }
            self._send(int(action), json.dumps(error).encode(), Retry_After="0")
        elif action == "slow":
            time.sleep(2.0)
            self._send(200, json.dumps(completion("Score: 4", logprobs)).encode())
        elif action == "garbage":
            self._send(200, b"<html>upstream proxy error</html>")
        elif action == "empty":
            self._send(
                200,
                json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [],
                    }
                ).encode(),
            )
        elif action == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "500")
            self.end_headers()
            self.wfile.write(b'{"id": "chatcmpl-trunc", "choi')
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif action == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            raise ValueError(f"unknown fault {action!r}")


class FaultServer(ThreadingHTTPServer):
    """Serve the misbehaving API on a free port of 127.0.0.1 until closed."""

    daemon_threads = True
    request_queue_size = 256  # socketserver's 5 refuses bursts of concurrent clients

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.requests = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
