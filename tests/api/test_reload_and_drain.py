"""Through HTTP, in process: POST /v1/models/{name}/reload, requests in flight across a
swap, and the draining state a stop signal puts the service in."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.errors import ArtifactError
from service.model_store import ModelVersion
from service.serving.api.draining import start_draining
from service.serving.app import create_app
from service.serving.inference.classifier import Classifier
from service.serving.settings import Settings
from tests.support.fakes import GREEN, FakeClassifier, assert_serves, image_bytes


class VersionedFake(FakeClassifier):
    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version
        self.metadata = self.metadata.model_copy(update={"version": version})


class GatedFake(VersionedFake):
    """Held inside each model call until the test opens the gate."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        self.entered.release()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().predict(images, texts)


class Loader:
    """Loads fakes for the versions in the store; ``broken`` ones raise like a bad artifact."""

    def __init__(self) -> None:
        self.loads: list[int] = []
        self.broken: set[int] = set()

    def __call__(self, version: ModelVersion) -> Classifier:
        self.loads.append(version.version)
        if version.version in self.broken:
            raise ArtifactError(f"golden example 0 differs from training (version {version})")
        return VersionedFake(version.version)


def publish(settings: Settings, version: int) -> None:
    (settings.model_store / "fake" / str(version)).mkdir(parents=True)


def post(client: TestClient) -> httpx.Response:
    return client.post(
        "/v1/predict", files={"image": ("g.png", image_bytes(GREEN))}, data={"text": "x"}
    )


def mmserve_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("mmserve")}


@pytest.fixture
def loader() -> Loader:
    return Loader()


@pytest.fixture
def reloadable(settings: Settings, loader: Loader) -> Iterator[TestClient]:
    app = create_app(settings, classifier=VersionedFake(3), loader=loader)
    with TestClient(app) as client:
        yield client


def test_reload_serves_the_new_version(reloadable: TestClient, settings: Settings) -> None:
    client = reloadable
    publish(settings, 4)
    response = client.post("/v1/models/fake/reload")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model": "fake",
        "version": 4,
        "previous_version": 3,
        "reloaded": True,
        "message": "now serving version 4 (was 3)",
    }
    assert post(client).json()["version"] == 4
    assert client.get("/v1/models/fake").json()["version"] == 4
    assert client.get("/health/ready").json()["version"] == 4
    again = client.post("/v1/models/fake/reload").json()
    assert (again["reloaded"], again["version"]) == (False, 4)


def test_a_broken_version_is_a_409_and_the_old_one_keeps_serving(
    reloadable: TestClient, settings: Settings, loader: Loader
) -> None:
    client = reloadable
    publish(settings, 5)
    loader.broken.add(5)
    for _ in range(3):
        response = client.post("/v1/models/fake/reload")
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "reload_rejected"
        assert "version 5" in error["message"] and "golden example 0" in error["message"]
        assert "version 3 keeps serving" in error["message"]
    assert loader.loads == [5]  # rejected once, remembered
    assert post(client).json()["version"] == 3
    assert client.get("/health/ready").status_code == 200


def test_reload_of_an_unknown_model_is_404(reloadable: TestClient) -> None:
    response = reloadable.post("/v1/models/other/reload")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_reload_is_documented(reloadable: TestClient) -> None:
    spec = reloadable.get("/openapi.json").json()
    operation = spec["paths"]["/v1/models/{name}/reload"]["post"]
    assert {"200", "404", "409", "503"} <= set(operation["responses"])


@pytest.mark.parametrize("pinned", [True, False])
def test_pinned_or_fixed_classifiers_do_not_reload(
    settings: Settings, loader: Loader, pinned: bool
) -> None:
    publish(settings, 4)
    if pinned:
        app = create_app(settings.model_copy(update={"model_version": 3}), VersionedFake(3))
    else:
        app = create_app(settings, classifier=VersionedFake(3))  # no loader
    with TestClient(app) as client:
        body = client.post("/v1/models/fake/reload").json()
        assert (body["reloaded"], body["version"]) == (False, 3)
        assert ("pinned" in body["message"]) is pinned
        assert post(client).json()["version"] == 3


def test_requests_in_flight_finish_on_the_version_they_started_on(
    settings: Settings, loader: Loader
) -> None:
    gated = GatedFake(3)
    app = create_app(settings, classifier=gated, loader=loader)
    before = mmserve_threads()
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(post, client)
        assert gated.entered.acquire(timeout=10)  # inside version 3's model call
        publish(settings, 4)
        reload = client.post("/v1/models/fake/reload")
        assert reload.json()["reloaded"] is True
        # Version 4 answers new requests while version 3 still holds the first one.
        assert post(client).json()["version"] == 4
        gated.gate.set()
        answer = in_flight.result(10)
        assert answer.status_code == 200 and answer.json()["version"] == 3
    # Both runtimes closed: no decoding or model thread is left behind.
    assert mmserve_threads() <= before


def test_draining_refuses_new_work_and_lets_requests_in_flight_finish(
    settings: Settings,
) -> None:
    gated = GatedFake(3)
    app = create_app(settings, classifier=gated)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(post, client)
        assert gated.entered.acquire(timeout=10)
        start_draining(app)  # what the SIGTERM hook does
        for method, path in [
            ("GET", "/health/ready"),
            ("POST", "/v1/predict"),
            ("POST", "/v1/predict/batch"),
            ("GET", "/v1/models"),
            ("POST", "/v1/models/fake/reload"),
        ]:
            files = {"image": ("g.png", image_bytes(GREEN))} if path.startswith("/v1/p") else None
            response = client.request(
                method, path, files=files, data={"text": "x"} if files else None
            )
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"]["code"] == "shutting_down"
            assert int(response.headers["retry-after"]) > 0
        assert client.get("/health/live").status_code == 200
        gated.gate.set()
        answer = in_flight.result(10)
        assert answer.status_code == 200 and answer.json()["version"] == 3


def test_a_signal_during_start_up_is_not_forgotten(settings: Settings) -> None:
    app = create_app(settings, classifier=FakeClassifier())
    start_draining(app)  # SIGTERM while the model was loading
    with TestClient(app) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "shutting_down"
    with TestClient(app) as client:  # a later start of the same app serves again
        assert_serves(client)
