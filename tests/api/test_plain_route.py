"""The plain ``POST /v1/predict`` route answers as the FastAPI route does, and leaves it every
request whose dependencies or parameters have something to decide."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.serving.api.state import app_state
from service.serving.api.v1 import plain
from service.serving.app import create_app
from service.serving.server import server_config
from service.serving.settings import Settings
from tests.support.fakes import LABELS, RED, FakeClassifier, image_bytes

KEY = "plain-route-key-0123456789"
# A query the FastAPI route accepts and that changes nothing: every class, as without it.
EVERY_CLASS = f"?top_k={len(LABELS)}"


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many requests the plain route took."""
    calls: list[int] = []
    original = plain.predict_one

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(plain, "predict_one", counting)
    yield calls


def _post(client: TestClient, query: str = "", **kwargs: Any) -> httpx.Response:
    response: httpx.Response = client.post(f"/v1/predict{query}", **kwargs)
    return response


def _pair() -> dict[str, Any]:
    return {"files": {"image": ("x.png", image_bytes(RED), "image/png")}, "data": {"text": "hi"}}


def test_the_same_answer_headers_and_errors_as_the_fastapi_route(
    client: TestClient, taken: list[int]
) -> None:
    cases: list[dict[str, Any]] = [
        _pair(),
        {"data": {"text": "text only"}},
        {"files": {"image": ("x.png", image_bytes(RED), "image/png")}},
        {"data": {"text": ""}},  # neither modality: 422
        {"content": b"{}", "headers": {"content-type": "application/json"}},  # 415
        {"files": {"image": ("x.png", b"not an image", "image/png")}, "data": {"text": "x"}},
    ]
    for case in cases:
        before = len(taken)
        plain_answer = _post(client, **case)
        assert len(taken) == before + 1, "the plain route took it"
        routed = _post(client, EVERY_CLASS, **case)
        assert len(taken) == before + 1, "a query string goes to the FastAPI route"
        assert plain_answer.status_code == routed.status_code, case
        assert plain_answer.json() == routed.json(), case
        for header in ("content-type", "x-model-name", "x-model-version"):
            assert plain_answer.headers.get(header) == routed.headers.get(header), header
        assert plain_answer.headers["x-request-id"] != routed.headers["x-request-id"]
    assert _post(client, **_pair()).json()["label"] == "red"


def test_keys_a_draining_service_and_other_methods_go_to_the_fastapi_route(
    settings: Settings, fake: FakeClassifier, taken: list[int]
) -> None:
    keyed = Settings(
        **{**settings.model_dump(exclude={"api_keys", "api_keys_file"}), "api_keys": KEY}
    )
    with TestClient(create_app(keyed, classifier=fake)) as client:
        assert _post(client, **_pair()).status_code == 401
        assert _post(client, headers={"x-api-key": KEY}, **_pair()).status_code == 200
        assert client.get("/v1/predict").status_code == 405
    with TestClient(create_app(settings, classifier=fake)) as client:
        app_state(client.app).draining = True
        refused = _post(client, **_pair())
        assert refused.status_code == 503 and "retry-after" in refused.headers
        app_state(client.app).draining = False
    assert taken == [], "authentication and draining are the FastAPI route's dependencies"


def test_the_fastapi_route_still_documents_the_endpoint(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert set(operation["responses"]) >= {"200", "415", "422", "503"}


def test_the_plain_route_names_itself_and_templates_are_ready_before_the_first_request(
    settings: Settings, fake: FakeClassifier, taken: list[int]
) -> None:
    """Requests are labelled by the route that served them, read from the scope; the
    templates (for requests refused before routing) are built with the server's
    configuration, not on the first request that needs them (the OpenAPI document: about
    0.1 s)."""
    app = create_app(settings, classifier=fake)
    request_log = app_state(app).request_log
    assert request_log is not None
    built: list[int] = []
    templates = request_log._templates
    assert templates is not None

    def counting() -> Any:
        built.append(1)
        return templates()

    request_log._templates = counting
    server_config(app, settings)  # as mmserve serve does before serving
    assert app.openapi_schema is not None and built == [1]
    series = 'mmserve_http_requests_total{method="POST",route="/v1/predict",status="200"} '

    def served(client: TestClient) -> float:
        lines = client.get("/metrics").text.splitlines()
        return sum(float(line[len(series) :]) for line in lines if line.startswith(series))

    with TestClient(app) as client:
        at_start = len(built)
        before = served(client)
        for _ in range(3):
            assert _post(client, **_pair()).status_code == 200
        assert taken == [1, 1, 1]
        assert len(built) == at_start == 1  # no request looked the route up again
        assert served(client) == before + 3
