"""Hostile and edge inputs of optional modalities and explain=modality (fake classifier):
documented 4xx answers in the error shape, and the service keeps serving."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.preprocessing import blank_image
from service.serving.metrics import exposition
from tests.support.fakes import (
    BLUE,
    LABELS,
    SIZE,
    FakeClassifier,
    assert_serves,
    fake_probabilities,
    image_bytes,
)

V1_CASES: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "predict, no parts": ("/v1/predict", {"files": {"x": ("x", b"1")}}, 422, "missing_modalities"),
    "predict, empty text only": (
        "/v1/predict",
        {"files": {"text": (None, "")}},
        422,
        "missing_modalities",
    ),
    "predict, empty image file": (
        "/v1/predict",
        {"files": {"image": ("x.png", b"")}},
        400,
        "invalid_image",
    ),
    "predict, unknown explain": (
        "/v1/predict?explain=gradients",
        {"files": {"image": ("x.png", image_bytes())}},
        422,
        "unprocessable_input",
    ),
    "batch, no parts": (
        "/v1/predict/batch",
        {"files": {"x": ("x", b"1")}},
        422,
        "missing_modalities",
    ),
    "batch, an empty text without images": (
        "/v1/predict/batch",
        {"files": [("text", (None, "a")), ("text", (None, ""))]},
        422,
        "missing_modalities",
    ),
    "JSON batch, an empty instance": (
        "/v1/predict/batch",
        {"json": {"instances": [{"text": "a"}, {}]}},
        422,
        "missing_modalities",
    ),
    "JSON batch, unknown explain": (
        "/v1/predict/batch?explain=",
        {"json": {"instances": [{"text": "a"}]}},
        422,
        "unprocessable_input",
    ),
}


@pytest.mark.parametrize("case", V1_CASES)
def test_v1_refusals(client: TestClient, fake: FakeClassifier, case: str) -> None:
    path, kwargs, status, code = V1_CASES[case]
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert fake.calls == []
    assert_serves(client)


V2_CASES: dict[str, tuple[dict[str, Any], int]] = {
    "no inputs": ({"inputs": []}, 422),
    "empty text, no image": (
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [""]}]},
        422,
    ),
    "unknown explain": (
        {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
            "parameters": {"explain": "lime"},
        },
        400,
    ),
}


@pytest.mark.parametrize("case", V2_CASES)
def test_v2_refusals(client: TestClient, fake: FakeClassifier, case: str) -> None:
    body, status = V2_CASES[case]
    response = client.post("/v2/models/fake/infer", json=body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert fake.calls == []
    assert_serves(client)


def test_missing_image_is_blank_pixels_not_a_file(client: TestClient) -> None:
    response = client.post("/v1/predict", files={"text": (None, "something blue")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["modalities"] == "text" and body["label"] == "blue"
    want = fake_probabilities(blank_image(SIZE)[None], ["something blue"])[0]
    got = {p["label"]: p["probability"] for p in body["predictions"]}
    assert [got[label] for label in LABELS] == pytest.approx(want.tolist(), abs=1e-6)


def test_dropout_trained_model_answers_without_warning(
    client: TestClient, fake: FakeClassifier
) -> None:
    fake.metadata.training["modality_dropout"] = 0.2
    fake.metadata.metrics["ablation"] = {"image_only": {"accuracy": 0.5}}
    before = exposition()
    response = client.post("/v1/predict", files={"image": ("b.png", image_bytes(BLUE))})
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == [] and response.json()["modalities"] == "image"
    assert exposition().count(b"single_modality_without_dropout_total{") == before.count(
        b"single_modality_without_dropout_total{"
    )
    section = client.get("/v1/models/fake").json()["modalities"]
    assert section["trained_with_modality_dropout"] is True
    assert section["modality_dropout"] == 0.2
    assert section["image_only_accuracy"] == 0.5 and section["text_only_accuracy"] is None
