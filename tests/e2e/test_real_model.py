"""The real service on a really trained model: in process, as a server process, and
refusing to start on a corrupt artifact or one that no longer reproduces its golden set."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.preprocessing import preprocess_image
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.conftest import TINY_IMAGE_SIZE
from tests.support.servers import (
    by_label,
    copy_store,
    golden_examples,
    golden_with_image_and_text,
    post_predict,
    running_server,
    start_and_expect_exit,
    version_dir,
)

pytestmark = pytest.mark.slow


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
