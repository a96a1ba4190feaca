"""Load is shed before it is paid for: a refused model request is answered 503 with
Retry-After before its body is read, while draining, over the in-flight cap, or with a full
queue. Checked on the wire: the client sends headers and only the start of a large body,
and the answer comes anyway."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.errors import ServiceUnavailable
from service.serving.api.draining import start_draining
from service.serving.api.state import app_state
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import FakeClassifier, default_runtime, image_bytes
from tests.support.live import connect, free_port, multipart_head, read_response, serving
from tests.support.probes import metric_value, poll

DECLARED = 5_000_000
"""The body size refused requests declare; they send only its first bytes."""


class GatedClassifier(FakeClassifier):
    """A fake whose model calls wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(20), "the test never opened the gate"
        return super().predict(images, texts)

    def release(self, *requests: threading.Thread) -> None:
        """Open the gate and wait for ``requests`` to be answered."""
        self.gate.set()
        for request in requests:
            request.join(20)


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        model_store=tmp_path,
        model_name="fake",
        port=free_port(),
        reload_poll_s=0,
        **overrides,  # type: ignore[arg-type]
    )


def _refused_without_body(port: int) -> tuple[int, dict[str, str], dict[str, object], float]:
    """Send headers and 100 bytes of a 5 MB body; the status, headers, JSON body and seconds
    the answer took."""
    started = time.perf_counter()
    with connect(port) as sock:
        sock.sendall(multipart_head("/v1/predict", DECLARED) + b"x" * 100)
        raw = read_response(sock)
    elapsed = time.perf_counter() - started
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body), elapsed


def _small_request() -> bytes:
    image = image_bytes()
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        + image
        + b'\r\n--b0undary\r\nContent-Disposition: form-data; name="text"\r\n\r\nred'
        + b"\r\n--b0undary--\r\n"
    )
    return multipart_head("/v1/predict", len(body)) + body


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """One request and its whole response on a kept-alive connection."""
    sock.sendall(request)
    return _read_answers(sock, 1)[0]


def _predict(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/predict",
        files={"image": ("a.png", image_bytes())},
        data={"text": "red"},
        timeout=30,
    )


def _occupy(url: str, gated: GatedClassifier) -> threading.Thread:
    """A predict request (on its own thread) that the gated model holds until released."""
    request = threading.Thread(target=_predict, args=(url,))
    request.start()
    assert gated.entered.wait(10)
    return request


@pytest.fixture
def gated() -> Iterator[GatedClassifier]:
    model = GatedClassifier()
    yield model
    model.gate.set()


def test_a_draining_service_refuses_before_reading_the_body(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app = create_app(settings, classifier=FakeClassifier())
    with serving(app, settings) as port:
        url = f"http://127.0.0.1:{port}"
        before = _refusals_counted(url, "draining", "admission")
        start_draining(app)
        status, headers, body, elapsed = _refused_without_body(port)
        counted = _refusals_counted(url, "draining", "admission") - before
    assert counted == 1
    assert status == 503
    assert body["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert headers["retry-after"] == "5" and headers["connection"] == "close"
    assert elapsed < 5  # answered, not waiting for 5 MB that never come


def test_requests_over_the_in_flight_cap_are_refused_before_their_body(
    tmp_path: Path, gated: GatedClassifier
) -> None:
    settings = _settings(tmp_path, max_in_flight=1)
    app = create_app(settings, classifier=gated)
    with serving(app, settings) as port:
        url = f"http://127.0.0.1:{port}"
        counted_before = _requests_counted(url, "/v1/predict", "503")
        in_flight_before = _refusals_counted(url, "in_flight", "admission")
        holder = _occupy(url, gated)
        batcher = default_runtime(app).batcher
        refusing_before = batcher.refusing
        status, headers, body, _ = _refused_without_body(port)
        refusing_after = batcher.refusing
        health = httpx.get(f"{url}/health/live", timeout=10)  # GETs are never capped
        with connect(port) as kept:
            # A small body is discarded and the connection kept for the next request.
            small_refused = _exchange(kept, _small_request())
            gated.release(holder)
            small_served = _exchange(kept, _small_request())
        after = _predict(url)
        refused_count = _requests_counted(url, "/v1/predict", "503") - counted_before
        by_reason = _refusals_counted(url, "in_flight", "admission") - in_flight_before
    assert by_reason == 2
    assert not refusing_before and refusing_after  # the model's batcher was told
    assert status == 503
    assert body["error"]["code"] == "overloaded"  # type: ignore[index]
    assert "limit 1" in body["error"]["message"]  # type: ignore[index]
    assert headers["retry-after"] == "1" and headers["connection"] == "close"
    assert health.status_code == 200
    assert small_refused.startswith(b"http/1.1 503") and b"connection: close" not in small_refused
    assert small_served.startswith(b"http/1.1 200")  # on the same connection
    assert after.status_code == 200  # the slot is free again
    # Refused before the app, yet answered like any request: an id, and counted.
    assert len(headers["x-request-id"]) == 32 and b"x-request-id: " in small_refused
    assert refused_count == 2


def test_a_request_pipelined_behind_one_in_flight_is_answered_in_order(
    tmp_path: Path, gated: GatedClassifier
) -> None:
    # The second request finds the service full while the first is being answered on the
    # same connection: it must not be answered (refused) before the first.
    settings = _settings(tmp_path, max_in_flight=1)
    with serving(create_app(settings, classifier=gated), settings) as port, connect(port) as sock:
        sock.sendall(_small_request())
        assert gated.entered.wait(10)  # the first holds the only slot
        sock.sendall(_small_request())
        time.sleep(0.2)  # the second request's headers are parsed meanwhile
        gated.gate.set()
        answers = _read_answers(sock, 2)
    assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"200"]


def test_a_v2_request_is_refused_in_the_inference_protocol_shape(
    tmp_path: Path, gated: GatedClassifier
) -> None:
    settings = _settings(tmp_path, max_in_flight=1)
    with serving(create_app(settings, classifier=gated), settings) as port:
        url = f"http://127.0.0.1:{port}"
        holder = _occupy(url, gated)
        refused = httpx.post(f"{url}/v2/models/fake/infer", json={"inputs": []}, timeout=10)
        gated.release(holder)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "limit 1" in refused.json()["error"]


def _read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole responses (each with a Content-Length, headers lower-cased) from a
    kept-alive connection."""
    data, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += sock.recv(65536)
        answers.append(head.lower() + b"\r\n\r\n" + rest[:length])
        data = rest[length:]
    return answers


def _requests_counted(url: str, route: str, status: str) -> float:
    return metric_value(url, "mmserve_http_requests_total", route=route, status=status)


def _refusals_counted(url: str, reason: str, stage: str) -> float:
    return metric_value(url, "mmserve_requests_refused_total", reason=reason, stage=stage)


def test_a_full_queue_refuses_before_the_body_is_read(
    tmp_path: Path, gated: GatedClassifier
) -> None:
    settings = _settings(tmp_path, max_queue_items=1)
    app = create_app(settings, classifier=gated)
    with serving(app, settings) as port:
        url = f"http://127.0.0.1:{port}"
        before = _refusals_counted(url, "queue_full", "admission")
        running = _occupy(url, gated)  # the model is busy with the first request
        batcher = default_runtime(app).batcher
        queued = threading.Thread(target=_predict, args=(url,))
        queued.start()
        poll(lambda: _queue_depth(url) >= 1, "the second request to queue")
        refusing_before = batcher.refusing
        status, headers, body, _ = _refused_without_body(port)
        gated.release(running, queued)
        counted = _refusals_counted(url, "queue_full", "admission") - before
    assert counted == 1
    assert not refusing_before and batcher.refusing  # the model's batcher was told
    assert status == 503
    assert body["error"]["code"] == "overloaded"  # type: ignore[index]
    assert "queue" in body["error"]["message"]  # type: ignore[index]
    assert headers["retry-after"] == "1"


def test_requests_let_in_and_still_sending_fill_the_queue(
    tmp_path: Path, gated: GatedClassifier
) -> None:
    """Two requests let in, their bodies still arriving, fill a queue of two: a third is
    refused before its body, not let in only to be refused at the queue after decoding."""
    settings = _settings(tmp_path, max_queue_items=2)
    app = create_app(settings, classifier=gated)
    with serving(app, settings) as port:
        url = f"http://127.0.0.1:{port}"
        running = _occupy(url, gated)  # in the model: not waiting, not counted
        batcher = app_state(app).registry.find(None).primary().batcher  # type: ignore[union-attr]
        request = _small_request()
        slow = [connect(port) for _ in range(2)]
        for sock in slow:
            sock.sendall(request[:-100])  # the headers and all but the end of the body
        poll(lambda: batcher.admitted_requests == 2, "both requests to be let in")
        assert batcher.queued_items == 0
        status, _, body, _ = _refused_without_body(port)
        for sock in slow:
            sock.sendall(request[-100:])
        gated.release(running)
        answers = [_read_answers(sock, 1)[0] for sock in slow]
        for sock in slow:
            sock.close()
        after = _predict(url)
    assert status == 503
    assert body["error"]["code"] == "overloaded"  # type: ignore[index]
    assert "0 items and 2 requests are on their way" in body["error"]["message"]  # type: ignore[index]
    assert all(answer.startswith(b"http/1.1 200") for answer in answers)
    assert after.status_code == 200 and batcher.admitted_requests == 0


def test_every_refusal_series_is_exported_before_the_first_refusal(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with TestClient(create_app(settings, classifier=FakeClassifier())) as client:
        text = client.get("/metrics").text
    series = {
        (sample.labels["reason"], sample.labels["stage"])
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mmserve_requests_refused_total"
    }
    reasons = ("draining", "in_flight", "queue_full", "unavailable")
    assert series == {(r, s) for r in reasons for s in ("admission", "handler")}
    # Every kind of 503 is counted under one of those series (a new kind with a reason of
    # its own would have no series to count in).
    kinds, unseen = [], [ServiceUnavailable]
    while unseen:
        kind = unseen.pop()
        kinds.append(kind)
        unseen += kind.__subclasses__()
    assert {kind.__name__: kind.refusal_reason for kind in kinds} == {
        "ServiceUnavailable": "unavailable",
        "Overloaded": "in_flight",
        "QueueFull": "queue_full",
        "ShuttingDown": "draining",
    }


def test_a_request_refused_after_its_body_is_counted_at_the_handler_stage(
    tmp_path: Path, gated: GatedClassifier
) -> None:
    """A request of more items than the queue has room for is let in (it counts as one
    item until it gets there) and refused at the queue, after its body was read: the
    metric says so, apart from the refusals made before the body."""
    settings = _settings(tmp_path, max_queue_items=2)
    with serving(create_app(settings, classifier=gated), settings) as port:
        url = f"http://127.0.0.1:{port}"
        before = _refusals_counted(url, "queue_full", "handler")
        running = _occupy(url, gated)
        queued = threading.Thread(target=_predict, args=(url,))
        queued.start()
        poll(lambda: _queue_depth(url) >= 1, "the second request to queue")
        images = [("image", (f"{i}.png", image_bytes())) for i in range(2)]
        batch = httpx.post(
            f"{url}/v1/predict/batch", files=images, data={"text": ["a", "b"]}, timeout=30
        )
        gated.release(running, queued)
        after = _refusals_counted(url, "queue_full", "handler")
    assert batch.status_code == 503 and batch.headers["retry-after"] == "1"
    assert "the queue holds 1 items" in batch.json()["error"]["message"]
    assert after - before == 1


def _queue_depth(url: str) -> float:
    return metric_value(url, "mmserve_queue_depth")
