"""Slow and idle clients cannot hold the server: read deadlines (408) and a cap on open
connections (503), on a real server with ``mmserve serve``'s configuration."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.serving.app import create_app
from service.serving.connections import CoalescedWrites
from service.serving.settings import Settings
from tests.support.fakes import FakeClassifier, image_bytes
from tests.support.live import (
    connect,
    free_port,
    multipart_head,
    read_response,
    serving,
    status_of,
)

DEADLINE_S = 0.5


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    settings = Settings(
        model_store=tmp_path,
        model_name="fake",
        port=free_port(),
        reload_poll_s=0,
        header_timeout_s=DEADLINE_S,
        body_timeout_s=DEADLINE_S,
        max_connections=40,
    )
    with serving(create_app(settings, classifier=FakeClassifier()), settings) as live_port:
        yield live_port


def _error(response: bytes) -> dict[str, str]:
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert isinstance(body, dict)
    return body["error"]  # type: ignore[no-any-return]


def _predict_ok(port: int) -> float:
    """Seconds a normal prediction took; asserts it succeeded."""
    started = time.perf_counter()
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/predict",
        files={"image": ("a.png", image_bytes())},
        data={"text": "red"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def test_trickling_headers_get_408_and_normal_requests_still_pass(port: int) -> None:
    trickling = [connect(port) for _ in range(30)]
    started = time.monotonic()
    for sock in trickling:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Le")
    elapsed_ok = _predict_ok(port)  # served while 30 connections hang mid-header
    responses = [read_response(sock) for sock in trickling]
    closed_after = time.monotonic() - started
    for sock in trickling:
        sock.close()
    assert elapsed_ok < 1.0
    assert {status_of(r) for r in responses} == {408}
    assert _error(responses[0])["code"] == "request_timeout"
    assert all(b"connection: close" in r for r in responses)
    assert DEADLINE_S * 0.9 < closed_after < DEADLINE_S + 3


def test_a_silent_connection_is_closed_by_the_header_deadline(port: int) -> None:
    with connect(port) as sock:
        started = time.monotonic()
        response = read_response(sock)
        assert status_of(response) == 408
        assert time.monotonic() - started < DEADLINE_S + 3


def test_a_body_that_stops_arriving_gets_408(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(multipart_head("/v1/predict", 10_000) + b"--b0undary\r\n")
        started = time.monotonic()
        response = read_response(sock)
        waited = time.monotonic() - started
    assert status_of(response) == 408
    assert "body" in _error(response)["message"]
    assert DEADLINE_S * 0.9 < waited < DEADLINE_S + 3


def test_connections_beyond_the_cap_are_refused_at_once(port: int) -> None:
    held: list[socket.socket] = []
    try:
        # Hold the cap's worth of kept-alive connections, each answered once (so the
        # server has surely counted it).
        for _ in range(40):
            sock = connect(port)
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(sock)
        with connect(port) as extra:
            started = time.monotonic()
            response = read_response(extra)
            refused_in = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    assert status_of(response) == 503
    assert b"retry-after: 1" in response.lower()
    assert "max_connections" in _error(response)["message"]
    assert refused_in < DEADLINE_S  # refused, not timed out
    # The held connections are closed: new ones are served again (once the server has
    # seen them go).
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _predict_ok(port) < 5
            break
        except (httpx.HTTPError, AssertionError):
            assert time.monotonic() < deadline


class _Transport:
    """What a socket transport was asked to do."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_writes_within_one_pass_of_the_loop_leave_together() -> None:
    async def scenario() -> list[list[bytes]]:
        transport = _Transport()
        writes = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        seen = []
        writes.write(b"HTTP/1.1 200 OK\r\n\r\n")  # a head: held
        seen.append(list(transport.sent))
        writes.write(b"{}")  # its body: both leave now, in one send
        seen.append(list(transport.sent))
        writes.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # alone: leaves at the end of the pass
        seen.append(list(transport.sent))
        await asyncio.sleep(0)
        seen.append(list(transport.sent))
        writes.write(b"last")
        writes.close()  # sends what is held before closing
        seen.append(list(transport.sent))
        assert transport.closed and writes.is_closing()
        return seen

    head, body, cont = b"HTTP/1.1 200 OK\r\n\r\n", b"{}", b"HTTP/1.1 100 Continue\r\n\r\n"
    assert asyncio.run(scenario()) == [
        [],
        [head + body],
        [head + body],
        [head + body, cont],
        [head + body, cont, b"last"],
    ]


def test_a_write_held_when_the_client_goes_away_is_dropped() -> None:
    async def scenario() -> list[bytes]:
        transport = _Transport()
        writes = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        writes.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.closed = True  # the connection was lost before the end of the pass
        await asyncio.sleep(0)
        return transport.sent

    assert asyncio.run(scenario()) == []


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    """Two requests in one packet, through the held writes: two complete responses, in
    order (the second one's head never leaves before the first one's body)."""
    with connect(port) as sock:
        sock.sendall(
            b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v1/models/nope HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
            assert time.monotonic() < deadline, data
            data += sock.recv(65536)
    first, _, second = data.partition(b"HTTP/1.1 404")
    assert first.startswith(b"HTTP/1.1 200") and b'"status"' in first
    assert b"not_found" in second
