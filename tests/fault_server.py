"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on cue.

The rollout text of a request carries its script: ``FAULT:429,500,ok`` answers the first
attempt with 429, the second with 500, and every later one normally. Attempts are
counted per distinct request body, so concurrent requests do not disturb each other.

Without a script, a request whose text holds ``[[score N]]`` marks is answered
"Score: N" for the last mark (``[[score none]]``: an answer with no score): a
deterministic judge for pipeline tests; without marks, "Score: 4" (``default_score``:
a generous judge answers 5 to everything).

A streaming request (``"stream": true``, as agent harnesses call a policy) whose text
holds ``REPLY{...}`` is answered with that text as server-sent events: a policy whose
rollouts the test chooses.

Behaviours: ``ok`` (a completion ending "Score: 4"), ``score7`` (an out-of-range score),
an HTTP status (``400``, ``401``, ``404``, ``429``, ``500``, ``503``), ``slow`` (answer
after 2 s), ``garbage`` (200 with a non-JSON body), ``empty`` (200 with no choices),
``truncated`` (a body shorter than its Content-Length, then close), ``drop``
(close the connection without answering), ``trickle`` (a valid answer, its body sent
one byte every 50 ms, about 20 s in all).

Continuations of a "Score: " prefill that the parser must reject, with digits among
the first token's alternatives that would have made a score: ``echo`` ("1-5"),
``refuse`` ("I won't."), ``ten`` ("10" as the tokens "1", "0"). ``lowmass`` ("4", whose
only digit alternative is a "1" at probability 3e-7). ``quote`` (the judge quotes a
stray ``<think>`` and an unclosed fence marker, then gives "Score: 1").

``GET /v1/models`` lists :attr:`FaultServer.models`, each with a ``root`` as vLLM
reports it. A server made with ``redirect_to=URL`` answers every request with a 307 to
that URL (a judge address that forwards the prompt elsewhere).

Malformed answers, each a 200: ``content_int``, ``content_parts``, ``logprob_huge``,
``logprob_str``, ``logprob_null``, ``token_null``.
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

_SCRIPT = re.compile(r"FAULT:([a-z0-9_,]+)")
_MARK = re.compile(r"\[\[score (\d|none)\]\]")
_REPLY = re.compile(r"REPLY\{(.*?)\}", re.DOTALL)


def scripted(content: str, tokens: list[tuple[str, list[tuple[str, float]]]]) -> dict[str, Any]:
    """A completion whose logprobs are given token by token: (token, top alternatives)."""
    body = completion(content, False)
    body["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": token,
                # as a real server reports it: its entry in the top list, or below them all
                "logprob": next((lp for t, lp in top if t == token), min(lp for _, lp in top) - 1),
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top
                ],
            }
            for token, top in tokens
        ]
    }
    return body


_DIGITS = [("1", -0.1), ("2", -3.0), ("3", -3.0), ("4", -3.0), ("5", -3.0)]
# Answers after a "Score: " prefill, each with digit alternatives at its first token.
_REJECTED: dict[str, tuple[str, list[tuple[str, list[tuple[str, float]]]]]] = {
    "echo": ("1-5", [("1", _DIGITS), ("-", [("-", -0.1)]), ("5", [("5", -0.1)])]),
    "refuse": ("I won't.", [("I", [("I", -0.5), *_DIGITS[1:]]), (" won't.", [(" won't.", -0.1)])]),
    "ten": ("10", [("1", _DIGITS), ("0", [("0", -0.1)])]),
    # Written "4"; the only digit among the alternatives is a "1" at probability 3e-7.
    "lowmass": ("4", [("4", [("four", -1e-6), ("1", -15.0)])]),
}


def _malformed(action: str) -> dict[str, Any]:
    body = completion("Score: 4", True)
    choice = body["choices"][0]
    tokens = choice["logprobs"]["content"]
    if action == "content_int":
        choice["message"]["content"] = 4
    elif action == "content_parts":
        choice["message"]["content"] = [{"type": "text", "text": "Score: 4"}]
    elif action == "logprob_huge":
        tokens[-1]["top_logprobs"][0]["logprob"] = 1e308
    elif action == "logprob_str":
        tokens[-1]["top_logprobs"][0]["logprob"] = "likely"
    elif action == "logprob_null":
        tokens[-1]["top_logprobs"][1]["logprob"] = None
    elif action == "token_null":
        tokens[-1]["token"] = None
    else:
        raise ValueError(f"unknown fault {action!r}")
    return body


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


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
            listed = [t["logprob"] for t in top if t["token"] == ch]
            tokens.append(
                {
                    "token": ch,
                    # its own entry, or below the list: a sampled token, as a server reports
                    "logprob": listed[0] if listed else min(t["logprob"] for t in top) - 1,
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

    def _stream(self, content: str, request: dict[str, Any]) -> None:
        """Answer as a streaming chat completion: server-sent events, then ``[DONE]``."""

        def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
            return {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0,
                    "model": request.get("model", "fault"),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

        events = [chunk({"role": "assistant", "content": content}, None), chunk({}, "stop")]
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
            events.append({**chunk({}, None), "choices": [], "usage": usage})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, body.encode(), "text/event-stream")

    def do_GET(self) -> None:
        if self.server.redirect_to:
            self._send(307, b"", Location=self.server.redirect_to + self.path[len("/v1") :])
        elif self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fault",
                     "root": f"/models/{m}-{self.server.revision}", "max_model_len": 2048}
                    for m in self.server.models]  # fmt: skip
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        # The client may give up first (a timeout test): then there is nobody to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if self.server.redirect_to:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with self.server.lock:
                    self.server.requests += 1
                self._send(307, b"", Location=self.server.redirect_to + self.path[len("/v1") :])
                return
            self._answer()

    def _answer(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = json.loads(raw)
        text = " ".join(_text(m.get("content")) for m in request.get("messages", []))
        match = _SCRIPT.search(text)
        script = match.group(1).split(",") if match else ["ok"]
        key = hashlib.sha256(raw).hexdigest()
        with self.server.lock:
            self.server.bodies.append(request)
            self.server.authorizations.append(self.headers.get("Authorization"))
            attempt = self.server.attempts.get(key, 0)
            self.server.attempts[key] = attempt + 1
            self.server.requests += 1
        action = script[min(attempt, len(script) - 1)]
        logprobs = bool(request.get("logprobs"))
        marks = _MARK.findall(text)
        reply = _REPLY.search(text)
        if action == "ok" and reply and request.get("stream"):  # a policy, as agents call one
            self._stream(reply.group(1), request)
        elif action == "ok" and marks:  # a deterministic judge: the last [[score N]] mark
            answer = (
                "I cannot grade this."
                if marks[-1] == "none"
                else f"Reasoning: as marked.\nScore: {marks[-1]}"
            )
            self._send(200, json.dumps(completion(answer, logprobs)).encode())
        elif action == "ok":
            answer = f"Reasoning: fine.\nScore: {self.server.default_score}"
            self._send(200, json.dumps(completion(answer, logprobs)).encode())
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
        elif action == "trickle":
            body = json.dumps(completion("Score: 4", logprobs)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        elif action in _REJECTED:  # continuations of a "Score: " prefill
            content, tokens = _REJECTED[action]
            self._send(200, json.dumps(scripted(content, tokens)).encode())
        elif action == "quote":
            answer = "The student writes <think> and [BEGIN REASONING 00000000] here.\nScore: 1"
            self._send(200, json.dumps(completion(answer, logprobs)).encode())
        elif action.startswith(("content_", "logprob_", "token_")):
            self._send(200, json.dumps(_malformed(action)).encode())
        else:
            raise ValueError(f"unknown fault {action!r}")


class FaultServer(ThreadingHTTPServer):
    """Serve the misbehaving API on a free port of 127.0.0.1 until closed."""

    daemon_threads = True
    request_queue_size = 256  # socketserver's 5 refuses bursts of concurrent clients

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("marks", "m", "fault-model", "fault", "judge"),
        revision: str = "r1",
        redirect_to: str | None = None,
        default_score: int = 4,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.models, self.revision, self.redirect_to = models, revision, redirect_to
        self.default_score = default_score
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.bodies: list[dict[str, Any]] = []  # every request body, parsed, in order
        self.authorizations: list[str | None] = []  # each request's Authorization header
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
