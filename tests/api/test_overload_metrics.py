"""Through HTTP: the batcher's 503 when its queue is full, and the metrics it records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import GREEN, FakeClassifier, assert_serves, default_runtime, image_bytes


class GatedFake(FakeClassifier):
    """The fake, held inside each model call until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        self.entered.release()
        assert self.gate.wait(10)
        return super().predict(images, texts)


def post(client: TestClient) -> httpx.Response:
    return client.post(
        "/v1/predict", files={"image": ("g.png", image_bytes(GREEN))}, data={"text": "x"}
    )


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


def test_full_queue_gives_503_with_retry_after_then_serves(settings: Settings) -> None:
    fake = GatedFake()
    settings = settings.model_copy(update={"max_queue_items": 1})
    with TestClient(create_app(settings, classifier=fake)) as client, ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, client)
        assert fake.entered.acquire(timeout=10)
        queued = pool.submit(post, client)
        batcher = default_runtime(client.app).batcher  # type: ignore[arg-type]
        wait_for(lambda: batcher.queued_items == 1)
        refused = post(client)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        fake.gate.set()
        assert running.result(10).status_code == 200
        assert queued.result(10).status_code == 200
        assert_serves(client)


def metric_values(client: TestClient) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels or (set(sample.labels) == {"le"} and sample.labels["le"] == "+Inf")
    }


def test_metrics_count_items_and_batches(client: TestClient, fake: FakeClassifier) -> None:
    before = metric_values(client)
    assert post(client).status_code == 200
    instances = [{"image": {"b64": ""}, "text": "t"}]  # one bad item: no model call
    assert client.post("/v1/predict/batch", json={"instances": instances}).status_code == 400
    files = [("image", (f"{i}.png", image_bytes(GREEN))) for i in range(3)]
    batch = client.post("/v1/predict/batch", files=files, data={"text": ["a", "b", "c"]})
    assert batch.status_code == 200
    after = metric_values(client)
    assert after["mmserve_items_inferred_total"] - before["mmserve_items_inferred_total"] == 4
    assert after["mmserve_batch_size_count"] - before["mmserve_batch_size_count"] == 2
    assert after["mmserve_batch_size_sum"] - before["mmserve_batch_size_sum"] == 4
    assert after["mmserve_queue_seconds_count"] - before["mmserve_queue_seconds_count"] == 2
    assert fake.calls == [1, 3]
