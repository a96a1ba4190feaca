"""The real server process under attack: SIGTERM while requests are in flight, new model
versions (good and corrupt) published while it serves a steady stream, and the reload
endpoint on a really trained model."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service import model_store
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.servers import (
    ROOT,
    cli_server_command,
    copy_store,
    free_port,
    golden_with_image_and_text,
    server_env,
    wait_until_ready,
)

pytestmark = pytest.mark.slow

IN_FLIGHT = 16
WAIT_S = 90
"""Bound of every polling loop: generous, since 2 shared cores also run TensorFlow."""


@contextmanager
def mmserve(
    store: Path, tmp_path: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`mmserve serve` (the container's command) with extra MMSERVE_* variables; ready on
    entry, and always stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            cli_server_command(port),
            cwd=ROOT,
            env={**server_env(store), **env},
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_ready(url, process, log_file)
            yield url, process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


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


def test_sigterm_drains_requests_in_flight_and_exits_0(trained_store: Path, tmp_path: Path) -> None:
    file, text = golden_with_image_and_text(trained_store)
    content_type, body = multipart(file.read_bytes(), text)
    release = threading.Event()
    with mmserve(trained_store, tmp_path, MMSERVE_RELOAD_POLL_S="0") as (url, process):
        port = int(url.rsplit(":", 1)[1])
        uploads = [SlowUpload(port, content_type, body, release) for _ in range(IN_FLIGHT)]
        threads = [threading.Thread(target=u.run) for u in uploads]
        for thread in threads:
            thread.start()
        try:
            # Every request is inside the service (holding the model) before the signal.
            poll(lambda: in_flight(url) == IN_FLIGHT, f"{IN_FLIGHT} requests in flight")
            process.send_signal(signal.SIGTERM)
            # New work: refused at the connection, or answered 503 while draining.
            ready = [probe(url, "GET", "/health/ready") for _ in range(5)]
            files = {"image": (file.name, file.read_bytes())}
            late = probe(url, "POST", "/v1/predict", files=files, data={"text": text})
            assert process.poll() is None  # still draining: it waits for the 16
        finally:
            release.set()
            for thread in threads:
                thread.join(WAIT_S)
        assert process.wait(timeout=WAIT_S) == 0

    log = (tmp_path / "server.log").read_text()
    print(f"readiness after SIGTERM: {ready}; a new prediction: {late}")
    assert set(ready) <= {503, None}, ready
    assert late in (503, None)
    for upload in uploads:
        assert upload.error is None, upload.error
        assert upload.status == 200, upload.answer
        assert (upload.answer["model"], upload.answer["version"]) == ("tiny", 1)
        assert abs(sum(p["probability"] for p in upload.answer["predictions"]) - 1) < 1e-4
    assert "SIGTERM: draining" in log
    assert "Application shutdown complete" in log


@dataclass
class Stream:
    """Sequential predictions on one keep-alive connection until stopped."""

    url: str
    files: dict[str, tuple[str, bytes]]
    text: str
    stop: threading.Event
    versions: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(
                        "/v1/predict", files=self.files, data={"text": self.text}
                    )
                except httpx.TransportError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                else:
                    self.versions.append(response.json()["version"])


def publish_copy(store: Path, corrupt: bool = False) -> int:
    """Publish a copy of tiny/1 the way the trainer does: staged, then renamed into place."""
    with model_store.staging(store, "tiny") as staged:
        shutil.copytree(store / "tiny" / "1", staged, dirs_exist_ok=True)
        if corrupt:
            (staged / "model.keras").write_bytes(b"this is not a keras archive")
        return model_store.publish(store, "tiny", staged).version


def test_hot_reload_under_load_swaps_good_versions_and_rejects_corrupt_ones(
    trained_store: Path, tmp_path: Path
) -> None:
    store = copy_store(trained_store, tmp_path)
    file, text = golden_with_image_and_text(store)
    log_file = tmp_path / "server.log"
    stop = threading.Event()
    with mmserve(store, tmp_path, MMSERVE_RELOAD_POLL_S="0.5") as (url, process):
        streams = [Stream(url, {"image": (file.name, file.read_bytes())}, text, stop)]
        streams.append(Stream(url, streams[0].files, text, stop))
        threads = [threading.Thread(target=s.run) for s in streams]
        for thread in threads:
            thread.start()
        try:
            poll(lambda: all(s.versions for s in streams), "the streams running")
            assert publish_copy(store) == 2
            poll(
                lambda: all(s.versions[-1] == 2 for s in streams),
                "responses naming version 2",
                log_file,
            )

            assert publish_copy(store, corrupt=True) == 3
            poll(lambda: "rejected tiny version 3" in log_file.read_text(), "v3 rejected")
            served = sum(len(s.versions) for s in streams)
            poll(lambda: sum(len(s.versions) for s in streams) > served + 10, "more answers")
            ready = httpx.get(f"{url}/health/ready", timeout=10)
            assert ready.status_code == 200 and ready.json()["version"] == 2

            reload = httpx.post(f"{url}/v1/models/tiny/reload", timeout=WAIT_S)
            assert reload.status_code == 409
            assert reload.json()["error"]["code"] == "reload_rejected"
            assert "version 3" in reload.json()["error"]["message"]
            unknown = httpx.post(f"{url}/v1/models/other/reload", timeout=10)
            assert unknown.status_code == 404
        finally:
            stop.set()
            for thread in threads:
                thread.join(WAIT_S)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_S) == 0

    log = log_file.read_text()
    for stream in streams:
        assert stream.failures == []
        assert stream.versions == sorted(stream.versions)  # never back to an older version
        assert stream.versions[0] == 1 and stream.versions[-1] == 2
    # The service logs JSON lines (MMSERVE_LOG_FORMAT defaults to json).
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    rejected = [r for r in records if "rejected tiny version 3" in r["message"]]
    assert len(rejected) == 1, rejected  # rejected once, not retried every poll
    assert "model.keras" in rejected[0]["message"] and rejected[0]["level"] == "error"
    assert "now serving tiny version 2" in log


def test_reload_endpoint_loads_a_verified_version_and_refuses_a_drifting_one(
    trained_store: Path, tmp_path: Path
) -> None:
    store = copy_store(trained_store, tmp_path)
    file, text = golden_with_image_and_text(store)
    files = {"image": (file.name, file.read_bytes())}
    settings = Settings(model_store=store, model_name="tiny", reload_poll_s=0, decode_threads=1)
    with TestClient(create_app(settings)) as client:
        before = client.post("/v1/predict", files=files, data={"text": text}).json()
        assert publish_copy(store) == 2
        reload = client.post("/v1/models/tiny/reload")
        assert reload.status_code == 200, reload.text
        assert reload.json()["reloaded"] is True and reload.json()["version"] == 2
        after = client.post("/v1/predict", files=files, data={"text": text}).json()
        assert after["version"] == 2
        assert after["predictions"] == before["predictions"]  # the same weights

        # Version 3 no longer reproduces its golden examples: refused, 2 keeps serving.
        with model_store.staging(store, "tiny") as staged:
            shutil.copytree(store / "tiny" / "1", staged, dirs_exist_ok=True)
            index = staged / "golden" / "golden.json"
            golden = json.loads(index.read_text())
            golden["examples"][0]["probabilities"][0] += 0.01
            index.write_text(json.dumps(golden))
            model_store.publish(store, "tiny", staged)
        refused = client.post("/v1/models/tiny/reload")
        assert refused.status_code == 409
        assert "golden" in refused.json()["error"]["message"]
        assert client.get("/health/ready").json()["version"] == 2
