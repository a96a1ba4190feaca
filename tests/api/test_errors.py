"""Client errors are 4xx in one JSON shape, unexpected ones 500; the server keeps serving."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import FakeClassifier, assert_serves, image_bytes

PNG = image_bytes()
CASES: dict[str, tuple[dict[str, Any], int, str]] = {
    "invalid image": (
        {"files": {"image": ("x.png", b"definitely not an image")}, "data": {"text": "t"}},
        400,
        "invalid_image",
    ),
    "empty file": (
        {"files": {"image": ("x.png", b"")}, "data": {"text": "t"}},
        400,
        "invalid_image",
    ),
    "too many pixels": (
        {"files": {"image": ("x.png", image_bytes(size=(1000, 101)))}, "data": {"text": "t"}},
        413,
        "payload_too_large",
    ),
    "neither image nor text": (
        {"files": {"other": ("x.png", PNG)}, "data": {"note": "t"}},
        422,
        "missing_modalities",
    ),
    "empty text and no image": (
        {"files": {"other": ("x.png", PNG)}, "data": {"text": ""}},
        422,
        "missing_modalities",
    ),
    "image as a text field": (
        {"files": {"text": (None, "t")}, "data": {"image": "abc"}},
        422,
        "unprocessable_input",
    ),
    "two images": (
        {
            "files": [("image", ("a.png", PNG)), ("image", ("b.png", PNG))],
            "data": {"text": ["a", "b"]},
        },
        422,
        "unprocessable_input",
    ),
    "text too long": (
        {"files": {"image": ("x.png", PNG)}, "data": {"text": "x" * 51}},
        422,
        "text_too_long",
    ),
    "top_k zero": (
        {"files": {"image": ("x.png", PNG)}, "data": {"text": "t", "top_k": "0"}},
        422,
        "unprocessable_input",
    ),
    "top_k not a number": (
        {"files": {"image": ("x.png", PNG)}, "data": {"text": "t", "top_k": "three"}},
        422,
        "unprocessable_input",
    ),
    "json body": ({"json": {"image": "abc", "text": "t"}}, 415, "unsupported_media_type"),
    "urlencoded body": ({"data": {"text": "t"}}, 415, "unsupported_media_type"),
    "no body": ({}, 415, "unsupported_media_type"),
    "broken multipart": (
        {"content": b"--xyz\r\nnonsense", "headers": {"content-type": "multipart/form-data"}},
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_client_errors_on_predict(client: TestClient, fake: FakeClassifier, case: str) -> None:
    request, status, code = CASES[case]
    response = client.post("/v1/predict", **request)
    assert response.status_code == status, response.text
    assert response.json() == {
        "error": {"code": code, "message": response.json()["error"]["message"]}
    }
    assert response.json()["error"]["message"]
    assert fake.calls == []
    assert_serves(client)


def test_query_top_k_validation_uses_the_error_shape(client: TestClient) -> None:
    response = client.post(
        "/v1/predict?top_k=0", files={"image": ("x.png", PNG)}, data={"text": "t"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unprocessable_input"
    assert "top_k" in response.json()["error"]["message"]
    assert_serves(client)


def test_unknown_path_and_wrong_method(client: TestClient) -> None:
    # Not under /v2, whose errors are the Open Inference Protocol's (tests/api/test_v2.py).
    response = client.get("/v3/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = client.get("/v1/predict")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]
    assert_serves(client)


def test_unexpected_error_is_500_in_the_error_shape(
    settings: Settings, fake: FakeClassifier, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, classifier=fake)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/predict", files={"image": ("x.png", PNG)}, data={"text": "boom"}
        )
        assert response.status_code == 500
        assert response.json() == {
            "error": {"code": "internal_error", "message": "internal server error"}
        }
        assert "the fake model exploded" in caplog.text
        assert_serves(client)
