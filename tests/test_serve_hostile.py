"""The reward server under hostile and broken clients, over real sockets on 127.0.0.1.

The judge is the fault server's deterministic one (``[[score N]]`` marks) over real
HTTP. After each hostile exchange the server must still answer a normal request right.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fault_server import FaultServer

from exprl_rewards.judges import OpenAIJudge
from exprl_rewards.rewards.pipeline import RewardPipeline
from exprl_rewards.serve import RewardServer

TOKEN = "s3cret"


@pytest.fixture
def server(fault: FaultServer) -> Iterator[RewardServer]:
    judge = OpenAIJudge("marks", base_url=fault.url, max_attempts=1, timeout=5)
    pipeline = RewardPipeline(judge, mode="outcome")
    with RewardServer(
        pipeline, port=0, token=TOKEN, read_timeout=1.0, max_connections=3
    ) as running:
        yield running


def body(n: int = 2, labels: list[str] | None = None) -> bytes:
    prompts = [f"Question {i}?" for i in range(n)]
    return json.dumps({
        "query": [f"{p} answer [[score {1 + i}]]" for i, p in enumerate(prompts)],
        "prompts": prompts,
        "labels": labels or ["the reference"] * n,
    }).encode()  # fmt: skip


def headers(length: int | str | None, token: str = TOKEN) -> bytes:
    lines = ["POST /get_reward HTTP/1.1", "Host: x", f"Authorization: Bearer {token}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(server: RewardServer, raw: bytes, *, pause: float = 0.0) -> tuple[int, str]:
    """Send raw bytes (optionally a byte at a time, ``pause`` s apart); the status and body."""
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((str(host), port), timeout=15) as s:
        if pause:
            for i in range(len(raw)):
                try:
                    s.sendall(raw[i : i + 1])
                except OSError:
                    break  # the server has answered and closed
                time.sleep(pause)
        else:
            s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = int(next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        ))  # fmt: skip
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, json.loads(rest)["error"] if status != 200 else rest.decode()


def still_right(server: RewardServer) -> None:
    status, text = exchange(server, headers(len(body())) + body())
    assert status == 200
    assert json.loads(text)["rewards"] == [0.0, 0.25]


@pytest.mark.parametrize(
    ("length", "status", "message"),
    [
        ("-1", 400, "Content-Length '-1' is not a byte count"),  # skipped the limit, hung
        ("abc", 400, "Content-Length 'abc' is not a byte count"),
        (None, 411, "needs a Content-Length"),
        ("10", 408, "did not arrive within 1 s"),  # a body that stalls
    ],
)
def test_bad_or_stalled_lengths_get_an_answer(
    server: RewardServer, length: str | None, status: int, message: str
) -> None:
    got, error = exchange(server, headers(length) + b"{}")
    assert got == status
    assert message in error
    still_right(server)


def test_a_trickled_body_meets_a_deadline_not_a_per_read_timeout(server: RewardServer) -> None:
    data = body()
    status, error = exchange(server, headers(len(data)) + data, pause=0.05)  # ~10 s in all
    assert status == 408
    assert "did not arrive within 1 s" in error
    still_right(server)


def test_headers_trickled_a_byte_at_a_time_do_not_hold_the_slots(server: RewardServer) -> None:
    """Every slot taken by a client sending its headers a byte every 0.2 s: the
    request's one deadline frees them, where per-read timeouts never fired (issue 24)."""
    host, port = server.httpd.server_address[:2]
    raw = headers(len(body()))
    slow = [socket.create_connection((str(host), port), timeout=15) for _ in range(3)]
    statuses: list[int] = []
    try:
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < 4.0:  # 4 s of trickling, a read deadline of 1 s
            for s in slow:
                with contextlib.suppress(OSError):
                    s.sendall(raw[sent % len(raw) : sent % len(raw) + 1])
            sent += 1
            time.sleep(0.2)
            if time.monotonic() - start > 1.5 and not statuses:
                statuses.append(exchange(server, headers(len(body())) + body())[0])
    finally:
        for s in slow:
            s.close()
    assert statuses == [200]
    still_right(server)


def test_connections_past_the_limit_get_a_503_not_a_thread(server: RewardServer) -> None:
    host, port = server.httpd.server_address[:2]
    idle = [socket.create_connection((str(host), port), timeout=15) for _ in range(3)]
    try:
        time.sleep(0.3)  # the three are accepted and hold their slots
        status, error = exchange(server, headers(len(body())) + body())
        assert status == 503
        assert "busy" in error
    finally:
        for s in idle:
            s.close()
    time.sleep(1.5)  # their slots come back by the read deadline at the latest
    still_right(server)


@pytest.mark.parametrize(("path", "token", "status"), [("/get_reward", "wrong", 401),
                                                         ("/nope", TOKEN, 404)])  # fmt: skip
def test_keep_alive_after_a_refused_request_stays_in_step(
    server: RewardServer, path: str, token: str, status: int
) -> None:
    host, port = server.httpd.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=15)
    try:
        for expected, (where, key) in [(status, (path, token)), (200, ("/get_reward", TOKEN))]:
            connection.request("POST", where, body=body(),
                               headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            reply = connection.getresponse()
            data = reply.read()
            assert reply.status == expected, data
        assert json.loads(data)["rewards"] == [0.0, 0.25]
        connection.request("GET", "/health")  # and /health on the same connection
        assert connection.getresponse().read()
    finally:
        connection.close()


def test_a_client_that_goes_away_is_one_log_line(
    server: RewardServer,
    fault: FaultServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slow = json.dumps({"query": ["P x FAULT:slow,ok [[score 3]]"], "prompts": ["P"],
                       "labels": ["r"]}).encode()  # fmt: skip
    host, port = server.httpd.server_address[:2]
    with caplog.at_level(logging.INFO, logger="exprl_rewards.serve"):
        s = socket.create_connection((str(host), port), timeout=15)
        s.sendall(headers(len(slow)) + slow)
        time.sleep(0.3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # a reset, while the judge is still thinking (2 s)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "went away" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.1)
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1
    assert "Traceback" not in capsys.readouterr().err
    still_right(server)


def post_json(server: RewardServer, payload: Any) -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, text = exchange(server, headers(len(data)) + data)
    return status, (json.loads(text) if status == 200 else text)


def test_hostile_bodies_get_clear_answers(server: RewardServer) -> None:
    surrogate = body().replace(b"Question 0?", b"Question \\ud800?")
    status, error = post_json(server, surrogate)
    assert status == 400
    assert "field 'query.0' has a lone surrogate" in error

    latex = body(labels=["{x} + 1 = 2, so x = 1", "{"])  # starts with "{", is not JSON
    status, reply = post_json(server, latex)
    assert status == 200
    assert reply["rewards"] == [0.0, 0.25]

    null = body(labels=["plain", json.dumps({"solution": None})])
    status, error = post_json(server, null)
    assert status == 400
    assert error.startswith("sample 1: a JSON label needs 'solution'")
    still_right(server)
