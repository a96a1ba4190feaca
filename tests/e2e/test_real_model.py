"""The real service on a really trained model: in process, as a server process, and
refusing to start on a corrupt artifact or one that no longer reproduces its golden set."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.inference.preprocessing import preprocess_image
from service.settings import Settings
from tests.conftest import TINY_IMAGE_SIZE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def version_dir(store: Path) -> Path:
    return store / "tiny" / "1"


def golden_examples(store: Path) -> list[dict[str, Any]]:
    index = version_dir(store) / "golden" / "golden.json"
    examples: list[dict[str, Any]] = json.loads(index.read_text())["examples"]
    return examples


def golden_with_image_and_text(store: Path) -> tuple[Path, str]:
    example = next(e for e in golden_examples(store) if e["image"] and e["text"])
    return version_dir(store) / "golden" / example["image"], example["text"]


def post_predict(url: str, file: Path, text: str) -> httpx.Response:
    """``POST /v1/predict`` with one image file and its text, as multipart."""
    return httpx.post(
        f"{url}/v1/predict",
        files={"image": (file.name, file.read_bytes())},
        data={"text": text},
        timeout=30,
    )


def by_label(body: dict[str, Any]) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in body["predictions"]}


def test_in_process_service_matches_keras(trained_store: Path) -> None:
    import keras
    import tensorflow as tf

    file, text = golden_with_image_and_text(trained_store)
    data = file.read_bytes()
    settings = Settings(model_store=trained_store, model_name="tiny")
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").json() == {
            "status": "ready",
            "model": "tiny",
            "version": 1,
        }
        response = client.post(
            "/v1/predict", files={"image": (file.name, data)}, data={"text": text}
        )
        assert response.status_code == 200, response.text
        labels = client.get("/v1/models/tiny").json()["labels"]
        instances = [
            {
                "image": {"b64": _b64(version_dir(trained_store) / "golden" / e["image"])},
                "text": e["text"],
            }
            for e in golden_examples(trained_store)
            if e["image"]
        ]
        batch = client.post("/v1/predict/batch", json={"instances": instances})
        assert batch.status_code == 200, batch.text

    model = keras.saving.load_model(version_dir(trained_store) / "model.keras", compile=False)
    pixels = preprocess_image(data, TINY_IMAGE_SIZE)[None]
    want = np.asarray(model({"image": tf.constant(pixels), "text": tf.constant([[text]])}))[0]
    got = by_label(response.json())
    assert sorted(got) == sorted(labels)
    np.testing.assert_allclose([got[label] for label in labels], want, atol=1e-5)

    stored = [e["probabilities"] for e in golden_examples(trained_store) if e["image"]]
    for result, probabilities in zip(batch.json()["results"], stored, strict=True):
        got = by_label(result)
        np.testing.assert_allclose([got[label] for label in labels], probabilities, atol=1e-4)


def test_server_process_answers_httpx_and_curl(trained_store: Path, tmp_path: Path) -> None:
    file, text = golden_with_image_and_text(trained_store)
    with running_server(trained_store, tmp_path) as (url, process):
        response = post_predict(url, file, text)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "tiny" and response.json()["version"] == 1
        bad = httpx.post(
            f"{url}/v1/predict", files={"image": ("x.png", b"junk")}, data={"text": ""}
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_image"
        if shutil.which("curl") is not None:
            curl = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-F",
                    f"image=@{file}",
                    "--form-string",
                    f"text={text}",
                    f"{url}/v1/predict",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert curl.returncode == 0, curl.stderr
            assert json.loads(curl.stdout) == response.json()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status reports it.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()


def test_corrupt_model_file_stops_start_up(trained_store: Path, tmp_path: Path) -> None:
    store = copy_store(trained_store, tmp_path)
    (version_dir(store) / "model.keras").write_bytes(b"this is not a keras archive")
    result = start_and_expect_exit(store)
    assert result.returncode != 0
    assert "model.keras" in result.stderr
    assert "start-up failed" in result.stderr


def test_tampered_golden_set_stops_start_up(trained_store: Path, tmp_path: Path) -> None:
    store = copy_store(trained_store, tmp_path)
    index = version_dir(store) / "golden" / "golden.json"
    golden = json.loads(index.read_text())
    golden["examples"][0]["probabilities"][0] += 0.01
    index.write_text(json.dumps(golden))
    result = start_and_expect_exit(store)
    assert result.returncode != 0
    assert "golden" in result.stderr
    assert "start-up failed" in result.stderr


def _b64(file: Path) -> str:
    import base64

    return base64.b64encode(file.read_bytes()).decode()


def copy_store(store: Path, tmp_path: Path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(store, target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]


def cli_server_command(port: int) -> list[str]:
    """The container's command (`mmserve serve`), listening where the test can reach it."""
    return [
        str(Path(sys.executable).parent / "mmserve"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def server_env(store: Path) -> dict[str, str]:
    """One worker process (tests/e2e/test_workers.py covers several)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSERVE_")}
    env.update(
        MMSERVE_MODEL_STORE=str(store),
        MMSERVE_MODEL_NAME="tiny",
        MMSERVE_WORKERS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def start_and_expect_exit(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server_command(free_port()),
        cwd=ROOT,
        env=server_env(store),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


@contextmanager
def running_server(
    store: Path, tmp_path: Path, command: Callable[[int], list[str]] = server_command
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the server, wait (bounded) for readiness, and always stop it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command(port), cwd=ROOT, env=server_env(store), stdout=log, stderr=log
        )
        try:
            wait_until_ready(url, process, log_file)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_file.read_text()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not ready within {START_TIMEOUT_S}s:\n{log_file.read_text()}")
