"""Several really trained models in one `mmserve serve`: every model, version and label
answers as its own ``model.keras``; a canary gets its share; promote, rollback, unload and
load under load fail no request; and with two workers a load or unload through one
connection holds on every connection after it."""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.preprocessing import preprocess_image
from tests.support.load import background_load, wait_for
from tests.support.servers import (
    by_label,
    cli_server_command,
    copy_store,
    counts_by_pid,
    running_server,
)

pytestmark = pytest.mark.slow

SERVE = {
    "MMSERVE_MODEL_NAME": "pairs",
    "MMSERVE_MODELS": "pairs,shapes",
    "MMSERVE_VERSION_POLICY": "shapes=latest:2",
    "MMSERVE_RELOAD_POLL_S": "0",
}
CANARY_PERCENT = 20
CANARY_REQUESTS = 300
BURST = 40
"""Requests on new connections after a change with two workers: the kernel spreads
connections, so both workers answer some of them."""


def example(store: Path) -> tuple[bytes, str]:
    """A golden image and its text (any model's: all take the same inputs)."""
    golden = store / "pairs" / "1" / "golden"
    examples = json.loads((golden / "golden.json").read_text())["examples"]
    chosen = next(e for e in examples if e["image"] and e["text"])
    return (golden / chosen["image"]).read_bytes(), chosen["text"]


def keras_answer(version: Path, image: bytes, text: str) -> tuple[list[str], np.ndarray]:
    """The version's labels and its ``model.keras``'s probabilities, in this process."""
    import keras
    import tensorflow as tf

    metadata = json.loads((version / "metadata.json").read_text())
    model = keras.saving.load_model(version / "model.keras", compile=False)
    pixels = preprocess_image(image, tuple(metadata["image_size"]))[None]
    out = model({"image": tf.constant(pixels), "text": tf.constant([[text]])})
    return list(metadata["labels"]), np.asarray(out)[0]


def v1(client: httpx.Client, path: str, image: bytes, text: str) -> httpx.Response:
    return client.post(path, files={"image": ("x.jpg", image)}, data={"text": text})


def v2_infer(client: httpx.Client, path: str, image: bytes, text: str) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "data": [{"b64": base64.b64encode(image).decode()}],
            },
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]},
        ]
    }
    return client.post(path, json=body)


def v2_probabilities(response: httpx.Response) -> list[float]:
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    data: list[float] = outputs["probabilities"]["data"]
    return data


def in_order(answer: dict[str, Any], labels: list[str]) -> list[float]:
    got = by_label(answer)
    assert sorted(got) == sorted(labels)
    return [got[label] for label in labels]


def test_models_versions_labels_canary_and_changes_under_load(
    registry_store: Path, tmp_path: Path
) -> None:
    store = copy_store(registry_store, tmp_path)  # labels are written into the store
    image, text = example(store)
    with (
        running_server(store, tmp_path, cli_server_command, SERVE) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        # Each served version answers as its own model.keras, through v1 and v2.
        label_counts = set()
        for name, version in (("shapes", 1), ("shapes", 2), ("pairs", 1)):
            labels, want = keras_answer(store / name / str(version), image, text)
            label_counts.add(len(labels))
            answer = v1(client, f"/v1/models/{name}/versions/{version}/predict", image, text)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-model-version"] == str(version)
            np.testing.assert_allclose(in_order(answer.json(), labels), want, atol=1e-5)
            answer = v2_infer(client, f"/v2/models/{name}/versions/{version}/infer", image, text)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == str(version)
            np.testing.assert_allclose(v2_probabilities(answer), want, atol=1e-5)
            # A label pointing at the version answers the same.
            label = f"v{version}"
            moved = client.put(f"/v1/models/{name}/labels/{label}", json={"version": version})
            assert moved.status_code == 200, moved.text
            answer = v1(client, f"/v1/models/{name}/labels/{label}/predict", image, text)
            np.testing.assert_allclose(in_order(answer.json(), labels), want, atol=1e-5)
        assert label_counts == {3, 6}  # two models trained apart, on different label sets
        assert v1(client, "/v1/predict", image, text).json()["model"] == "pairs"

        # A 20% canary: the versions' shares over a few hundred unpinned requests.
        canary = client.put(
            "/v1/models/shapes/canary", json={"version": 2, "percent": CANARY_PERCENT}
        )
        assert canary.status_code == 200, canary.text
        assert canary.json()["version_labels"]["stable"] == 1
        versions = [
            v1(client, "/v1/models/shapes/predict", image, text).headers["x-model-version"]
            for _ in range(CANARY_REQUESTS)
        ]
        share = versions.count("2") / CANARY_REQUESTS
        bound = 3 * math.sqrt(0.2 * 0.8 / CANARY_REQUESTS)  # three binomial deviations
        print(f"canary share {share:.3f} of {CANARY_REQUESTS} (configured 0.20 +- {bound:.3f})")
        assert abs(share - CANARY_PERCENT / 100) <= bound
        assert set(versions) == {"1", "2"}

        # Promote and roll back while both models are under load: no request fails.
        def shapes(c: httpx.Client) -> httpx.Response:
            return v1(c, "/v1/models/shapes/predict", image, text)

        def pairs(c: httpx.Client) -> httpx.Response:
            return v1(c, "/v1/models/pairs/predict", image, text)

        with background_load(url, shapes) as on_shapes, background_load(url, pairs, 1) as on_pairs:
            wait_for(lambda: on_shapes.total >= 30, "the load is running")
            assert client.post("/v1/models/shapes/promote").status_code == 200
            after = v1(client, "/v1/models/shapes/predict", image, text)
            assert after.headers["x-model-version"] == "2"  # stable is the canary now
            again = client.put("/v1/models/shapes/canary", json={"version": 1, "percent": 50})
            assert again.status_code == 200, again.text
            seen = on_shapes.total
            wait_for(lambda: on_shapes.total >= seen + 30, "requests with the new canary")
            assert client.post("/v1/models/shapes/rollback").status_code == 200
            seen = on_shapes.total
            wait_for(lambda: on_shapes.total >= seen + 30, "requests after the rollback")
        print(f"promote/rollback: shapes {on_shapes}, pairs {on_pairs}")
        assert on_shapes.failed == 0 and on_pairs.failed == 0, (on_shapes, on_pairs)
        assert set(on_shapes.versions) == {1, 2}
        assert v1(client, "/v1/models/shapes/predict", image, text).headers["x-model-version"] == (
            "2"
        )

        # Unload one model and load it again while the other is under load.
        with background_load(url, pairs) as on_pairs:
            wait_for(lambda: on_pairs.total >= 30, "the load is running")
            assert client.post("/v1/models/shapes/unload").status_code == 200
            gone = v1(client, "/v1/models/shapes/predict", image, text)
            assert gone.status_code == 404
            assert v2_infer(client, "/v2/models/shapes/infer", image, text).status_code == 404
            index = client.post("/v2/repository/index", json={}).json()
            assert {e["state"] for e in index if e["name"] == "shapes"} == {"UNAVAILABLE"}
            assert client.post("/v2/repository/models/shapes/load").status_code == 200
            seen = on_pairs.total
            wait_for(lambda: on_pairs.total >= seen + 30, "requests after the load")
        print(f"unload/load: pairs {on_pairs}")
        assert on_pairs.failed == 0, on_pairs
        back = v1(client, "/v1/models/shapes/versions/1/predict", image, text)
        assert back.status_code == 200, back.text


def _burst(url: str, path: str, image: bytes, text: str) -> list[int]:
    """Statuses of ``BURST`` requests, each on a new connection."""
    statuses = []
    for _ in range(BURST):
        with httpx.Client(base_url=url, timeout=30) as fresh:
            statuses.append(v1(fresh, path, image, text).status_code)
    return statuses


def test_load_and_unload_reach_every_worker(registry_store: Path, tmp_path: Path) -> None:
    store = copy_store(registry_store, tmp_path)
    image, text = example(store)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = SERVE | {
        "MMSERVE_MODELS": "pairs",
        "MMSERVE_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with (
        running_server(store, tmp_path, cli_server_command, env) as (url, _),
        httpx.Client(base_url=url, timeout=120) as client,
    ):

        def pairs(c: httpx.Client) -> httpx.Response:
            return v1(c, "/v1/models/pairs/predict", image, text)

        with background_load(url, pairs) as on_pairs:
            wait_for(lambda: on_pairs.total >= 20, "the load is running")
            assert _burst(url, "/v1/models/shapes/predict", image, text) == [404] * BURST

            started = time.monotonic()
            loaded = client.post("/v1/models/shapes/load")
            load_s = time.monotonic() - started
            assert loaded.status_code == 200, loaded.text
            assert _burst(url, "/v1/models/shapes/predict", image, text) == [200] * BURST
            by_pid = counts_by_pid(metrics_dir, "mmserve_model_predictions_total", model="shapes")
            assert len(by_pid) == 2 and all(n > 0 for n in by_pid.values()), by_pid

            # A label moved through one worker holds on every worker once answered.
            moved = client.put("/v1/models/shapes/labels/stable", json={"version": 1})
            assert moved.status_code == 200, moved.text
            path = "/v1/models/shapes/labels/stable/predict"
            assert _burst(url, path, image, text) == [200] * BURST

            started = time.monotonic()
            unloaded = client.post("/v2/repository/models/shapes/unload")
            unload_s = time.monotonic() - started
            assert unloaded.status_code == 200, unloaded.text
            assert _burst(url, "/v1/models/shapes/predict", image, text) == [404] * BURST
        print(f"two workers: load {load_s:.2f}s, unload {unload_s:.2f}s; pairs {on_pairs}")
        assert on_pairs.failed == 0, on_pairs
