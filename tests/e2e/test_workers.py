"""`mmserve serve --workers 2` on a really trained model: two processes share the port and
act as one service (readiness, metrics, reload, drain), and a dead worker is replaced."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.probes import SlowUpload, in_flight, multipart, poll, probe
from tests.support.servers import (
    ROOT,
    cli_server_command,
    copy_store,
    counts_by_pid,
    free_port,
    golden_with_image_and_text,
    server_env,
    wait_until_ready,
)

pytestmark = pytest.mark.slow


def _predict(url: str, image: Path, text: str) -> httpx.Response:
    # A new connection per request: the kernel spreads connections, not requests.
    with httpx.Client(timeout=30) as client:
        return client.post(
            f"{url}/v1/predict",
            files={"image": (image.name, image.read_bytes())},
            data={"text": text},
        )


def _predict_requests_by_pid(metrics_dir: Path) -> dict[int, float]:
    """Successful /v1/predict requests counted by each worker process."""
    return counts_by_pid(
        metrics_dir, "mmserve_http_requests_total", route="/v1/predict", status="200"
    )


def _scraped_predictions(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mmserve_http_requests_total"
        and sample.labels.get("route") == "/v1/predict"
        and sample.labels.get("status") == "200"
    )


def _workers(supervisor: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    children = psutil.Process(supervisor.pid).children()
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def test_two_workers_serve_as_one(trained_store: Path, tmp_path: Path) -> None:
    store = copy_store(trained_store, tmp_path)
    image, text = golden_with_image_and_text(store)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(store) | {
        "MMSERVE_WORKERS": "2",
        "MMSERVE_RELOAD_POLL_S": "0",  # only an explicit reload may change the version
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as log:
        supervisor = subprocess.Popen(
            cli_server_command(port), cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            wait_until_ready(url, supervisor, log_file)
            workers = _workers(supervisor)
            assert len(workers) == 2

            # Both workers answer, and any worker's /metrics counts both.
            answers = [_predict(url, image, text) for _ in range(40)]
            assert {r.status_code for r in answers} == {200}
            by_pid = _predict_requests_by_pid(metrics_dir)
            assert set(by_pid) == {w.pid for w in workers}
            assert all(count > 0 for count in by_pid.values())
            assert _scraped_predictions(url) == 40

            # A reload through one worker is answered once every worker serves the new
            # version: no connection after the answer finds the old one.
            shutil.copytree(store / "tiny" / "1", store / "tiny" / "2")
            with httpx.Client(timeout=60) as client:
                reload = client.post(f"{url}/v1/models/tiny/reload")
            assert reload.status_code == 200 and reload.json()["version"] == 2
            before = _predict_requests_by_pid(metrics_dir)
            versions = [_predict(url, image, text).json()["version"] for _ in range(20)]
            after = _predict_requests_by_pid(metrics_dir)
            assert versions == [2] * 20
            # Both workers answered some of them (new connections are spread by the kernel).
            assert all(after[pid] > before[pid] for pid in before), (before, after)

            # A worker that dies is replaced; readiness is 503 until its successor is ready.
            victim = workers[0]
            victim.kill()
            victim.wait(30)
            poll(
                lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 503,
                "readiness reports the missing worker",
            )
            poll(
                lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200,
                "the replacement worker is ready",
            )
            replaced = _workers(supervisor)
            assert len(replaced) == 2 and victim.pid not in {w.pid for w in replaced}

            # SIGTERM drains both workers: requests in flight are answered, status 0.
            content_type, body = multipart(image.read_bytes(), text)
            release = threading.Event()
            uploads = [SlowUpload(port, content_type, body, release) for _ in range(8)]
            senders = [threading.Thread(target=upload.run) for upload in uploads]
            for sender in senders:
                sender.start()
            try:
                poll(lambda: in_flight(url) == 8, "8 requests in flight across the workers")
                supervisor.send_signal(signal.SIGTERM)
                late = probe(url, "GET", "/health/ready")
            finally:
                release.set()
                for sender in senders:
                    sender.join(60)
            assert supervisor.wait(60) == 0, log_file.read_text()
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait(30)
    assert late in (503, None)  # draining: not ready, or the port already closed
    for upload in uploads:
        assert upload.error is None and upload.status == 200, (upload.error, upload.answer)
    assert not any(psutil.pid_exists(w.pid) for w in replaced)


def test_workers_stop_when_the_supervisor_is_killed(trained_store: Path, tmp_path: Path) -> None:
    store = copy_store(trained_store, tmp_path)
    port = free_port()
    env = server_env(store) | {"MMSERVE_WORKERS": "2", "MMSERVE_RELOAD_POLL_S": "0"}
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as log:
        supervisor = subprocess.Popen(
            cli_server_command(port), cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", supervisor, log_file)
            workers = _workers(supervisor)
            assert len(workers) == 2
            supervisor.kill()  # no chance to stop its workers itself
            supervisor.wait(30)
            poll(
                lambda: not any(w.is_running() and w.status() != "zombie" for w in workers),
                "both workers have stopped",
            )
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
                supervisor.wait(30)
