"""Several models and versions in one service, with fake classifiers: routes by model,
version and label, the canary split, promote and rollback, load and unload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.fakes import GREEN, fake_store, image_bytes, multi_model_app


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return fake_store(tmp_path)


@pytest.fixture
def multi(store: Path) -> Iterator[TestClient]:
    with TestClient(multi_model_app(store)) as client:
        yield client


def predict(client: TestClient, path: str) -> tuple[int, dict[str, object], dict[str, str]]:
    response = client.post(path, files={"image": ("g.png", image_bytes(GREEN))}, data={"text": ""})
    return response.status_code, response.json(), dict(response.headers)


def test_each_model_version_and_label_answers_on_its_route(multi: TestClient) -> None:
    assert predict(multi, "/v1/predict")[1]["model"] == "fake"
    status, body, headers = predict(multi, "/v1/models/other/predict")
    assert status == 200 and (body["model"], body["version"]) == ("other", 1)
    assert (headers["x-model-name"], headers["x-model-version"]) == ("other", "1")
    assert predict(multi, "/v1/models/fake/versions/1/predict")[1]["version"] == 1
    assert predict(multi, "/v1/models/fake/versions/2/predict")[1]["version"] == 2
    assert predict(multi, "/v1/models/fake/versions/7/predict")[0] == 404
    assert predict(multi, "/v1/models/nope/predict")[0] == 404
    assert predict(multi, "/v1/models/fake/labels/stable/predict")[0] == 404
    assert multi.put("/v1/models/fake/labels/stable", json={"version": 1}).status_code == 200
    assert predict(multi, "/v1/models/fake/labels/stable/predict")[1]["version"] == 1
    assert predict(multi, "/v1/predict")[1]["version"] == 1  # stable wins over latest
    batch = multi.post(
        "/v1/models/fake/versions/2/predict/batch",
        files=[("image", ("a.png", image_bytes(GREEN))), ("image", ("b.png", image_bytes()))],
        data={"text": ["a", "b"]},
    )
    assert batch.status_code == 200 and batch.json()["version"] == 2
    v2 = multi.get("/v2/models/fake").json()
    assert v2["versions"] == ["1", "2"]
    assert multi.get("/v2/models/fake/versions/1/ready").status_code == 200
    assert multi.get("/v2/models/fake/versions/3/ready").status_code == 404
    listing = multi.get("/v1/models").json()["models"]
    assert [(m["name"], m["versions"]) for m in listing] == [("fake", [1, 2]), ("other", [1])]


def test_canary_split_promote_and_rollback(multi: TestClient, store: Path) -> None:
    change = multi.put("/v1/models/fake/canary", json={"version": 2, "percent": 10})
    assert change.status_code == 200, change.text
    assert change.json()["version_labels"] == {"stable": 1, "canary": 2}
    stored = json.loads((store / "fake" / "labels.json").read_text())
    assert stored == {"labels": {"stable": 1, "canary": 2}, "canary_percent": 10.0}
    versions = [predict(multi, "/v1/models/fake/predict")[1]["version"] for _ in range(200)]
    assert versions.count(2) == 20 and versions.count(1) == 180
    assert multi.post("/v1/models/fake/promote").json()["version_labels"] == {"stable": 2}
    assert {predict(multi, "/v1/predict")[1]["version"] for _ in range(20)} == {2}
    assert multi.post("/v1/models/fake/rollback").status_code == 404  # no canary left
    multi.put("/v1/models/fake/canary", json={"version": 1, "percent": 50})
    assert multi.post("/v1/models/fake/rollback").json()["version_labels"] == {"stable": 2}
    assert {predict(multi, "/v1/predict")[1]["version"] for _ in range(20)} == {2}
    metrics = multi.get("/metrics").text
    assert 'mmserve_model_predictions_total{model="fake",version="2"}' in metrics


def test_load_and_unload_through_both_apis(multi: TestClient) -> None:
    index = multi.post("/v2/repository/index").json()
    spare = {"name": "spare", "version": "4", "state": "UNAVAILABLE", "reason": "not loaded"}
    assert spare in index
    assert multi.post("/v2/repository/models/spare/load").status_code == 200
    assert predict(multi, "/v1/models/spare/predict")[1]["version"] == 4
    assert multi.post("/v1/models/spare/unload").json()["state"] == "UNAVAILABLE"
    assert predict(multi, "/v1/models/spare/predict")[0] == 404
    assert multi.post("/v1/models/spare/load").json() == {
        "model": "spare",
        "versions": [4],
        "state": "READY",
    }
    assert multi.post("/v2/repository/models/other/unload").status_code == 200
    assert multi.get("/v2/models/other/ready").status_code == 404
    assert multi.post("/v1/models/missing/load").status_code == 404
    repo = multi.get("/v1/models", params={"repository": "true"}).json()["repository"]
    assert {m["name"]: m["state"] for m in repo} == {
        "fake": "READY",
        "other": "UNAVAILABLE",
        "spare": "READY",
    }
    assert multi.get("/health/ready").status_code == 200
