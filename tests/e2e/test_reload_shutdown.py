"""The real server process under attack: SIGTERM while requests are in flight, new model
versions (good and corrupt) published while it serves a steady stream, and the reload
endpoint on a really trained model."""

from __future__ import annotations

import json
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service import model_store
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.probes import WAIT_S, SlowUpload, in_flight, multipart, poll, probe
from tests.support.servers import (
    cli_server_command,
    copy_store,
    golden_with_image_and_text,
    running_server,
)

pytestmark = pytest.mark.slow

IN_FLIGHT = 16


def test_sigterm_drains_requests_in_flight_and_exits_0(trained_store: Path, tmp_path: Path) -> None:
    file, text = golden_with_image_and_text(trained_store)
    content_type, body = multipart(file.read_bytes(), text)
    release = threading.Event()
    with running_server(
        trained_store, tmp_path, cli_server_command, {"MMSERVE_RELOAD_POLL_S": "0"}
    ) as (url, process):
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
    with running_server(store, tmp_path, cli_server_command, {"MMSERVE_RELOAD_POLL_S": "0.5"}) as (
        url,
        process,
    ):
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
