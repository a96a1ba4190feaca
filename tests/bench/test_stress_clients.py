"""The overload scenario's two clients (compiled C and Python) against a scripted server:
both count every answer by status, and both wait as long as Retry-After says when told to."""

from __future__ import annotations

import itertools
import re
import socketserver
import threading
from collections.abc import Callable, Iterator

import pytest

from bench import eventloop, metrics, stress

REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0.2\r\nConnection: close\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


class _Alternating(socketserver.BaseRequestHandler):
    """Reads whole requests; answers them 200 (keep-alive) and 503 (close) in turn."""

    counter: Iterator[int]

    def handle(self) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length: *(\d+)", head)
            length = int(match.group(1)) if match else 0
            while len(data) < length:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                data += chunk
            data = data[length:]
            if next(self.counter) % 2:
                self.request.sendall(REFUSAL)
                return
            self.request.sendall(ANSWER)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    _Alternating.counter = itertools.count()
    socketserver.ThreadingTCPServer.daemon_threads = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Alternating) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield int(server.server_address[1])
        server.shutdown()


def _runner(client: str, port: int) -> Callable[[bool], dict[str, object]]:
    if client == "c":
        binary = stress.compiled_client()
        if binary is None:
            pytest.skip("no C compiler")
        return lambda honour: eventloop.run(
            stress.compiled_closed_loop(binary, stress.Load(port, 4, 1.3, None, honour, 0.0))
        )
    return lambda honour: eventloop.run(
        stress.closed_loop(stress.Load(port, 4, 1.3, None, honour, 0.0))
    )


@pytest.mark.parametrize("client", ["c", "python"])
def test_both_clients_count_answers_and_honour_retry_after(client: str, port: int) -> None:
    run = _runner(client, port)
    eager, patient = run(False), run(True)
    for result in (eager, patient):
        assert result["client"] == client
        assert {"200", "503", "200_after_1s"} <= set(result) and "0" not in result
        assert result["503_without_retry_after"] == 0
    refused = patient["503"]
    assert isinstance(refused, dict)
    # Each of the 4 connections waits 0.2 s after every refusal: at most 7 in 1.3 s (one
    # more each of slack for the clocks involved); asking at once gives hundreds.
    assert refused["count"] <= 4 * 8
    eager_refused = eager["503"]
    assert isinstance(eager_refused, dict)
    assert eager_refused["count"] > 5 * refused["count"], "at once, refusals come fast"


def test_the_server_refusals_are_summed_by_stage() -> None:
    exposition = (
        "# TYPE mmserve_requests_refused_total counter\n"
        'mmserve_requests_refused_total{reason="queue_full",stage="admission"} 7.0\n'
        'mmserve_requests_refused_total{reason="in_flight",stage="admission"} 2.0\n'
        'mmserve_requests_refused_total{reason="queue_full",stage="handler"} 1.0\n'
        "# TYPE mmserve_http_requests_total counter\n"
        'mmserve_http_requests_total{method="POST",route="/v1/predict",status="503"} 10.0\n'
    )
    assert metrics.refusals_by_stage(exposition) == {"admission": 9.0, "handler": 1.0}
    assert metrics.refusals_by_stage("{}") is None  # not a service's exposition
