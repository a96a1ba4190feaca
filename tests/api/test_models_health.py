"""Model metadata, liveness, readiness, and 503 while the model is not loaded."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import LABELS, FakeClassifier, assert_serves, image_bytes


def test_models_list_and_detail(client: TestClient) -> None:
    listing = client.get("/v1/models")
    assert listing.status_code == 200
    detail = client.get("/v1/models/fake")
    assert detail.status_code == 200
    info = detail.json()
    assert listing.json() == {"models": [info]}
    assert info["name"] == "fake" and info["version"] == 3
    assert info["labels"] == LABELS
    assert info["device"] == "/CPU:0"
    inputs = {spec["name"]: spec for spec in info["inputs"]}
    assert inputs["image"]["dtype"] == "float32" and inputs["image"]["shape"] == [-1, 8, 8, 3]
    assert inputs["text"]["dtype"] == "string"
    assert info["outputs"][0]["shape"] == [-1, 3]
    assert info["metrics"] == {"test": {"accuracy": 0.9, "f1_macro": 0.88}}
    assert info["created_at"] == "2024-05-01T12:00:00+00:00"
    assert info["framework"] == {"tensorflow": "none"}


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "nope" in response.json()["error"]["message"]
    assert_serves(client)


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "fake", "version": 3}


def test_not_ready_before_start_up_and_after_shutdown(
    settings: Settings, fake: FakeClassifier
) -> None:
    app = create_app(settings, classifier=fake)
    before = TestClient(app)  # without `with` the lifespan does not run: nothing is loaded
    check_not_ready(before)
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
    check_not_ready(TestClient(app))
    assert fake.calls == []


def check_not_ready(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    for method, path in [
        ("GET", "/health/ready"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/fake"),
        ("POST", "/v1/predict"),
        ("POST", "/v1/predict/batch"),
    ]:
        response = client.request(
            method,
            path,
            files={"image": ("x.png", image_bytes())} if method == "POST" else None,
            data={"text": "t"} if method == "POST" else None,
        )
        assert response.status_code == 503, (path, response.text)
        assert response.json()["error"]["code"] == "unavailable"
        assert int(response.headers["retry-after"]) > 0


def test_openapi_documents_bodies_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/predict"]["post"]
    form = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary"
    assert "required" not in form  # either modality may be left out, not both
    assert [set(branch["required"]) for branch in form["anyOf"]] == [{"image"}, {"text"}]
    assert {"200", "400", "413", "415", "422", "503"} <= set(predict["responses"])
    batch = spec["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} == set(batch)
    instance = batch["application/json"]["schema"]["properties"]["instances"]["items"]
    image = instance["properties"]["image"]["anyOf"][0]  # or null: no image
    assert image["properties"]["b64"]["type"] == "string"
    schemas = spec["components"]["schemas"]
    assert schemas["PredictResponse"]["examples"]
    assert {"/v1/models", "/v1/models/{name}", "/health/live", "/health/ready"} <= set(
        spec["paths"]
    )
