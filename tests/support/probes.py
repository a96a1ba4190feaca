"""Probes for a server process under test: polling a condition, requests built or sent
by hand (a body held back mid-upload, one attempt on a new connection), and the in-flight
gauge as the metrics report it."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

WAIT_S = 90
"""Bound of every polling loop: generous, since 2 shared cores also run TensorFlow."""


def poll(condition: Callable[[], bool], what: str, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            server_log = log_file.read_text() if log_file else ""
            pytest.fail(f"not within {WAIT_S}s: {what}\n{server_log}")
        time.sleep(0.05)


def multipart(image: bytes, text: str) -> tuple[str, bytes]:
    boundary = "mmserve-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="g.png"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += image
    body += (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
        f"{text}\r\n--{boundary}--\r\n"
    ).encode()
    return f"multipart/form-data; boundary={boundary}", body


def metric_value(url: str, sample_name: str, **labels: str) -> float:
    """The value of the server's ``/metrics`` sample of that name with those labels (0 when
    it has none)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(
                sample.labels.get(key) == value for key, value in labels.items()
            ):
                return float(sample.value)
    return 0.0


def in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "mmserve_requests_in_flight":
            return float(family.samples[0].value)
    raise AssertionError("no mmserve_requests_in_flight metric")


@dataclass
class SlowUpload:
    """A prediction whose body arrives in two parts: the server holds the request (its
    headers are in, the body is not) until the test lets the second part go."""

    port: int
    content_type: str
    body: bytes
    release: threading.Event
    status: int | None = None
    answer: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        try:
            conn.putrequest("POST", "/v1/predict")
            conn.putheader("Content-Type", self.content_type)
            conn.putheader("Content-Length", str(len(self.body)))
            conn.endheaders()
            conn.send(self.body[:-64])
            assert self.release.wait(WAIT_S)
            conn.send(self.body[-64:])
            response = conn.getresponse()
            self.status = response.status
            self.answer = json.loads(response.read())
        except (OSError, http.client.HTTPException) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def probe(url: str, method: str, path: str, **kwargs: Any) -> int | None:
    """The status of one request on a new connection; None when the connection is refused."""
    try:
        return httpx.request(method, f"{url}{path}", timeout=10, **kwargs).status_code
    except httpx.TransportError:
        return None
