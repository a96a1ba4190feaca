"""Many requests against the in-process app (fake models, real HTTP stack): memory stays
flat over thousands of requests and repeated hot reloads, and an overload is answered with
503s that the service recovers from."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
import numpy as np
import psutil
from fastapi import FastAPI

from service.model_store import ModelVersion
from service.serving.app import create_app
from service.serving.inference.classifier import Classifier
from service.serving.settings import Settings
from tests.support.fakes import GREEN, LABELS, FakeClassifier, default_runtime, image_bytes

SOAK_REQUESTS = 2000
SOAK_RELOADS = 10
SOAK_CONCURRENCY = 8
MAX_RSS_GROWTH = 20 * 1024 * 1024
"""Allowed growth of resident memory over the soak: a leak of even 10 KiB per request
(a kept image, response or future) would pass 20 MiB."""

OVERLOAD_CLIENTS = 64
OVERLOAD_ROUNDS = 4


class VersionedFake(FakeClassifier):
    def __init__(self, version: int, delay: float = 0.0) -> None:
        super().__init__()
        self.version = version
        self.delay = delay
        self.metadata = self.metadata.model_copy(update={"version": version})

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)  # a slow model, in the model thread like a real one
        probabilities = super().predict(images, texts)
        self.calls.clear()  # the soak must not measure the fake's own bookkeeping
        return probabilities


def load_fake(version: ModelVersion) -> Classifier:
    return VersionedFake(version.version)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, behind an httpx client on the same event loop."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mmserve") as client:
            yield client


async def predict(client: httpx.AsyncClient, image: bytes) -> httpx.Response:
    return await client.post(
        "/v1/predict", files={"image": ("g.png", image)}, data={"text": "green"}
    )


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def test_soak_memory_stays_flat_across_requests_and_reloads(settings: Settings) -> None:
    app = create_app(settings, classifier=VersionedFake(1), loader=load_fake)
    image = image_bytes(GREEN)
    statuses: list[int] = []
    seen_by_worker: list[list[int]] = []

    async def worker(client: httpx.AsyncClient, count: int) -> None:
        versions: list[int] = []
        seen_by_worker.append(versions)
        for _ in range(count):
            response = await predict(client, image)
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.append(response.json()["version"])

    async def body() -> tuple[int, int]:
        async with serving(app) as client:
            await asyncio.gather(*(worker(client, 25) for _ in range(SOAK_CONCURRENCY)))
            start = rss()
            per_worker = SOAK_REQUESTS // SOAK_CONCURRENCY // SOAK_RELOADS
            for version in range(2, SOAK_RELOADS + 2):
                await asyncio.gather(
                    *(worker(client, per_worker) for _ in range(SOAK_CONCURRENCY)),
                    reload_to(client, settings, version),
                )
            return start, rss()

    threads_before = threading.active_count()
    started = time.monotonic()
    start, end = asyncio.run(body())
    elapsed = time.monotonic() - started
    growth = end - start
    print(
        f"soak: {len(statuses)} requests, {SOAK_RELOADS} reloads in {elapsed:.1f}s; "
        f"RSS {start / 2**20:.1f} -> {end / 2**20:.1f} MiB ({growth / 2**20:+.2f} MiB)"
    )
    assert set(statuses) == {200}
    assert len(statuses) >= SOAK_REQUESTS
    # A client that saw a version never sees an older one afterwards.
    assert all(seen == sorted(seen) for seen in seen_by_worker)
    assert max(max(seen) for seen in seen_by_worker) == SOAK_RELOADS + 1
    assert growth < MAX_RSS_GROWTH, f"resident memory grew by {growth / 2**20:.1f} MiB"
    # Every retired runtime's decoding and model threads are gone.
    assert threading.active_count() <= threads_before


async def reload_to(client: httpx.AsyncClient, settings: Settings, version: int) -> None:
    (settings.model_store / "fake" / str(version)).mkdir(parents=True)
    response = await client.post("/v1/models/fake/reload")
    assert response.status_code == 200 and response.json()["version"] == version


def test_overload_gets_503_with_retry_after_and_the_service_recovers(settings: Settings) -> None:
    slow = VersionedFake(1, delay=0.01)
    settings = settings.model_copy(
        update={"max_queue_items": 4, "max_batch_size": 2, "max_batch_delay_ms": 0.0}
    )
    app = create_app(settings, classifier=slow)
    image = image_bytes(GREEN)
    answers: list[httpx.Response] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in range(OVERLOAD_ROUNDS):
            answers.append(await predict(client, image))

    async def body() -> None:
        async with serving(app) as client:
            await asyncio.gather(*(client_loop(client) for _ in range(OVERLOAD_CLIENTS)))
            # Afterwards: nothing queued, nothing held, ready, and serving normally.
            assert default_runtime(app).batcher.queued_items == 0
            assert default_runtime(app).in_flight.count == 0
            assert (await client.get("/health/ready")).status_code == 200
            after = await predict(client, image)
            assert after.status_code == 200 and after.json()["label"] == "green"

    asyncio.run(body())
    statuses = [a.status_code for a in answers]
    ok, refused = statuses.count(200), statuses.count(503)
    print(
        f"overload: {len(statuses)} requests from {OVERLOAD_CLIENTS} clients: {ok} x 200, "
        f"{refused} x 503"
    )
    assert len(statuses) == OVERLOAD_CLIENTS * OVERLOAD_ROUNDS
    assert ok + refused == len(statuses), sorted(set(statuses))
    assert ok > 0 and refused > 0
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "overloaded"
            assert int(answer.headers["retry-after"]) > 0
        else:
            body = answer.json()
            assert body["label"] == "green" and body["version"] == 1
            assert sorted(p["label"] for p in body["predictions"]) == sorted(LABELS)
