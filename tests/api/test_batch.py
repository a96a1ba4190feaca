"""POST /v1/predict/batch: multipart parts or JSON base64 instances, one model call."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from tests.support.fakes import (
    BLUE,
    GREEN,
    GREY,
    RED,
    FakeClassifier,
    assert_serves,
    expected,
    image_bytes,
)

PAIRS = [(RED, "one"), (BLUE, "two"), (GREY, "green please")]


def multipart(pairs: list[tuple[tuple[int, int, int], str]]) -> dict[str, object]:
    files = [("image", (f"{i}.png", image_bytes(color))) for i, (color, _) in enumerate(pairs)]
    return {"files": files, "data": {"text": [text for _, text in pairs]}}


def instances(pairs: list[tuple[tuple[int, int, int], str]]) -> list[dict[str, object]]:
    return [
        {"image": {"b64": base64.b64encode(image_bytes(color)).decode()}, "text": text}
        for color, text in pairs
    ]


def check_results(body: dict[str, object], pairs: list[tuple[tuple[int, int, int], str]]) -> None:
    assert body["model"] == "fake" and body["version"] == 3
    results = body["results"]
    assert isinstance(results, list) and len(results) == len(pairs)
    for result, (color, text) in zip(results, pairs, strict=True):
        probabilities = [p["probability"] for p in result["predictions"]]
        assert probabilities == sorted(expected(image_bytes(color), text), reverse=True)
        assert result["label"] == result["predictions"][0]["label"]
    assert [r["label"] for r in results] == ["red", "blue", "green"]


def test_multipart_batch_in_order_in_one_call(client: TestClient, fake: FakeClassifier) -> None:
    response = client.post("/v1/predict/batch", **multipart(PAIRS))
    assert response.status_code == 200, response.text
    check_results(response.json(), PAIRS)
    assert fake.calls == [3]


def test_json_b64_batch_in_order_in_one_call(client: TestClient, fake: FakeClassifier) -> None:
    response = client.post("/v1/predict/batch", json={"instances": instances(PAIRS)})
    assert response.status_code == 200, response.text
    check_results(response.json(), PAIRS)
    assert fake.calls == [3]


def test_url_safe_unpadded_base64_is_accepted(client: TestClient) -> None:
    b64 = base64.urlsafe_b64encode(image_bytes(GREEN)).decode().rstrip("=")
    response = client.post(
        "/v1/predict/batch", json={"instances": [{"image": {"b64": b64}, "text": ""}]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["label"] == "green"


def test_top_k_in_json_and_query(client: TestClient) -> None:
    body = {"instances": instances(PAIRS[:2]), "top_k": 1}
    response = client.post("/v1/predict/batch", json=body)
    assert [len(r["predictions"]) for r in response.json()["results"]] == [1, 1]
    response = client.post("/v1/predict/batch?top_k=2", **multipart(PAIRS))
    assert [len(r["predictions"]) for r in response.json()["results"]] == [2, 2, 2]


def test_max_items_is_accepted(client: TestClient) -> None:
    pairs = [(GREEN, "")] * 4
    response = client.post("/v1/predict/batch", json={"instances": instances(pairs)})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 4


@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_more_than_max_items_is_413(client: TestClient, fake: FakeClassifier, kind: str) -> None:
    pairs = [(GREEN, "")] * 5
    if kind == "json":
        response = client.post("/v1/predict/batch", json={"instances": instances(pairs)})
    else:
        response = client.post("/v1/predict/batch", **multipart(pairs))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "4" in response.json()["error"]["message"]
    assert fake.calls == []
    assert_serves(client)


def test_count_mismatch_is_422(client: TestClient) -> None:
    request = multipart(PAIRS)
    request["data"] = {"text": ["only", "two"]}
    response = client.post("/v1/predict/batch", **request)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unpaired_parts"
    assert "3 'image' parts but 2 'text' parts" in response.json()["error"]["message"]
    assert_serves(client)


def test_bad_base64_is_400(client: TestClient) -> None:
    body = {"instances": [*instances(PAIRS[:1]), {"image": {"b64": "not base64!"}, "text": ""}]}
    response = client.post("/v1/predict/batch", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_base64"
    assert "instance 1" in response.json()["error"]["message"]
    assert_serves(client)


def test_one_bad_image_names_its_position(client: TestClient, fake: FakeClassifier) -> None:
    body = {"instances": [*instances(PAIRS[:2]), {"image": {"b64": "aGVsbG8="}, "text": ""}]}
    response = client.post("/v1/predict/batch", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"
    assert response.json()["error"]["message"].startswith("image 2:")
    assert fake.calls == []
    assert_serves(client)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"instances": []}', 422),
        (b'{"instances": [{"image": {"b64": ""}}]}', 400),  # an empty file is no image
        (b'{"instances": [{}]}', 422),  # neither modality
        (b'{"instances": [{"image": null, "text": ""}]}', 422),
        (b'{"instances": [{"image": "abc", "text": ""}]}', 422),
        (b'{"items": []}', 422),
    ],
)
def test_malformed_json_batches(client: TestClient, body: bytes, status: int) -> None:
    response = client.post(
        "/v1/predict/batch", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"code", "message"}
    assert_serves(client)


def test_text_too_long_in_batch_is_422(client: TestClient) -> None:
    body = {"instances": instances([(RED, "ok"), (RED, "x" * 51)])}
    response = client.post("/v1/predict/batch", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "text_too_long"
    assert "instance 1" in response.json()["error"]["message"]
    assert_serves(client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_other_content_types_are_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/predict/batch", content=b"text=hi", headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert_serves(client)
