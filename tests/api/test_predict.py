"""POST /v1/predict: one image+text pair."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.fakes import BLUE, GREY, LABELS, RED, FakeClassifier, expected, image_bytes


def predict(client: TestClient, data: bytes, text: str, **fields: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/v1/predict", files={"image": ("x.png", data, "image/png")}, data={"text": text, **fields}
    )
    return response


def test_probabilities_are_the_models_on_the_shared_preprocessing(client: TestClient) -> None:
    data = image_bytes(RED)
    response = predict(client, data, "a bright thing")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fake" and body["version"] == 3
    want = expected(data, "a bright thing")
    by_label = {p["label"]: p["probability"] for p in body["predictions"]}
    assert by_label == dict(zip(LABELS, want, strict=True))
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert body["label"] == body["predictions"][0]["label"] == "red"


def test_text_changes_the_answer(client: TestClient) -> None:
    response = predict(client, image_bytes(GREY), "something BLUE")
    assert response.json()["label"] == "blue"


def test_empty_text_means_no_text(client: TestClient) -> None:
    data = image_bytes(BLUE)
    response = predict(client, data, "")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["probability"] == max(expected(data, ""))


def test_jpeg_of_any_size_is_resized(client: TestClient) -> None:
    data = image_bytes(RED, size=(300, 17), fmt="JPEG")
    response = predict(client, data, "")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["probability"] == max(expected(data, ""))


@pytest.mark.parametrize(("how", "k", "count"), [("form", 2, 2), ("query", 1, 1), ("form", 9, 3)])
def test_top_k(client: TestClient, how: str, k: int, count: int) -> None:
    data = image_bytes(RED)
    if how == "form":
        response = predict(client, data, "x", top_k=str(k))
    else:
        response = client.post(
            f"/v1/predict?top_k={k}", files={"image": ("x.png", data)}, data={"text": "x"}
        )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == count
    assert [p["probability"] for p in predictions] == sorted(expected(data, "x"), reverse=True)[
        :count
    ]


def test_form_top_k_wins_over_query(client: TestClient) -> None:
    response = client.post(
        "/v1/predict?top_k=3",
        files={"image": ("x.png", image_bytes())},
        data={"text": "", "top_k": "1"},
    )
    assert len(response.json()["predictions"]) == 1


def test_each_request_is_one_model_call(client: TestClient, fake: FakeClassifier) -> None:
    for _ in range(3):
        predict(client, image_bytes(), "")
    assert fake.calls == [1, 1, 1]


def test_concurrent_requests_get_their_own_answers(client: TestClient) -> None:
    colours = {"red": RED, "blue": BLUE, "grey": GREY}
    jobs = [name for name in colours for _ in range(6)]

    def ask(name: str) -> tuple[str, list[float]]:
        body = predict(client, image_bytes(colours[name]), name).json()
        return name, [p["probability"] for p in body["predictions"]]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, jobs))
    for name, probabilities in answers:
        assert probabilities == sorted(expected(image_bytes(colours[name]), name), reverse=True)
