"""Admin keys: with them configured, the routes that change what is served need one (an
ordinary API key gets 403, no key 401), every other route takes either kind; without them,
those routes need what every route needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.serving.settings import Settings
from tests.support.fakes import GREEN, fake_store, image_bytes, multi_model_app

KEY = "k3y-Predict-0123456789"
ADMIN = "k3y-Admin-9876543210"
FILE_ADMIN = "k3y-Admin-from-file"

# (method, path, JSON body) of every route that changes what is served, in an order that
# succeeds when run one after the other.
CHANGING: list[tuple[str, str, dict[str, Any] | None]] = [
    ("PUT", "/v1/models/fake/labels/stable", {"version": 1}),
    ("PUT", "/v1/models/fake/canary", {"version": 2, "percent": 20}),
    ("POST", "/v1/models/fake/promote", None),
    ("PUT", "/v1/models/fake/canary", {"version": 1, "percent": 20}),
    ("POST", "/v1/models/fake/rollback", None),
    ("PUT", "/v1/models/fake/labels/stable", {"version": None}),
    ("POST", "/v1/models/fake/reload", None),
    ("POST", "/v1/models/spare/load", None),
    ("POST", "/v1/models/spare/unload", None),
    ("POST", "/v2/repository/models/spare/load", None),
    ("POST", "/v2/repository/models/spare/unload", None),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in CHANGING]
# Routes that read or predict: any valid key.
READING = ["/v1/models", "/v1/models/fake", "/metrics"]


def make_client(store: Path, **keys: Any) -> TestClient:
    return TestClient(multi_model_app(store, **keys))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return fake_store(tmp_path / "store")


@pytest.fixture
def both(store: Path) -> Iterator[TestClient]:
    """Ordinary API keys and admin keys."""
    with make_client(store, api_keys=KEY, admin_api_keys=ADMIN) as client:
        yield client


@pytest.fixture
def admin_only(store: Path) -> Iterator[TestClient]:
    """Admin keys alone: predicting and reading stay open."""
    with make_client(store, admin_api_keys=ADMIN) as client:
        yield client


def call(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None, key: str | None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.request(method, path, json=body, headers=headers)


def predict(client: TestClient, key: str | None) -> int:
    headers = {"X-API-Key": key} if key else {}
    response = client.post(
        "/v1/predict",
        files={"image": ("g.png", image_bytes(GREEN))},
        data={"text": ""},
        headers=headers,
    )
    return response.status_code


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    if response.request.url.path.startswith("/v2/"):
        assert response.json() == {"error": message}  # the protocol's error body
    else:
        assert response.json() == {"error": {"code": code, "message": message}}
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


FORBIDDEN = "this route changes what the service serves: it needs an admin key"


@pytest.mark.parametrize(("method", "path", "body"), CHANGING, ids=ROUTE_IDS)
def test_a_prediction_key_is_forbidden_and_no_key_unauthorized(
    both: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert_error(call(both, method, path, body, KEY), 403, "forbidden", FORBIDDEN)
    assert_error(
        call(both, method, path, body, None), 401, "unauthorized", "a valid API key is required"
    )
    assert_error(
        call(both, method, path, body, "wrong"), 401, "unauthorized", "a valid API key is required"
    )
    # Nothing changed: no label, the same versions, no spare model.
    described = both.get("/v1/models/fake", headers={"X-API-Key": KEY}).json()
    assert described["version_labels"] == {} and described["versions"] == [1, 2]
    assert both.get("/v1/models/spare", headers={"X-API-Key": KEY}).status_code == 404


def test_an_admin_key_changes_everything_and_either_key_predicts(both: TestClient) -> None:
    for method, path, body in CHANGING:
        response = call(both, method, path, body, ADMIN)
        assert response.status_code == 200, (method, path, response.text)
    for key in (KEY, ADMIN):
        assert predict(both, key) == 200
        for path in READING:
            assert both.get(path, headers={"X-API-Key": key}).status_code == 200, path
    # An admin key beside a prediction key is not an admin request.
    response = both.post(
        "/v1/models/fake/promote", headers={"Authorization": f"Bearer {ADMIN}", "X-API-Key": KEY}
    )
    assert_error(response, 403, "forbidden", FORBIDDEN)


@pytest.mark.parametrize(("method", "path", "body"), CHANGING, ids=ROUTE_IDS)
def test_admin_keys_alone_guard_only_the_changing_routes(
    admin_only: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert predict(admin_only, None) == 200
    assert admin_only.get("/v1/models/fake").status_code == 200
    for key in (None, KEY):
        assert_error(
            call(admin_only, method, path, body, key),
            401,
            "unauthorized",
            "a valid admin key is required",
        )


def test_admin_keys_alone_let_an_admin_key_change(admin_only: TestClient) -> None:
    for method, path, body in CHANGING:
        assert call(admin_only, method, path, body, ADMIN).status_code == 200, (method, path)


def test_without_admin_keys_an_api_key_changes_as_before(store: Path) -> None:
    with make_client(store, api_keys=KEY) as client:
        for method, path, body in CHANGING:
            assert call(client, method, path, body, KEY).status_code == 200, (method, path)
            assert call(client, method, path, body, None).status_code == 401, (method, path)


def test_admin_keys_from_a_file(store: Path, tmp_path: Path) -> None:
    keys = tmp_path / "admin_keys"
    keys.write_text(f"# operators\n{FILE_ADMIN}\n", encoding="utf-8")
    settings_keys = {"api_keys": KEY, "admin_api_keys": ADMIN, "admin_api_keys_file": keys}
    with make_client(store, **settings_keys) as client:
        assert call(client, "POST", "/v1/models/spare/load", None, FILE_ADMIN).status_code == 200
        assert call(client, "POST", "/v1/models/spare/unload", None, ADMIN).status_code == 200
        assert predict(client, FILE_ADMIN) == 200
    empty = tmp_path / "empty"
    empty.write_text("# none yet\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"admin_api_keys_file .* holds no key"):
        Settings(admin_api_keys_file=empty)


def test_admin_keys_stay_out_of_repr(store: Path) -> None:
    settings = Settings(model_store=store, admin_api_keys=ADMIN)
    assert settings.admin_key_set == {ADMIN}
    assert ADMIN not in repr(settings) and ADMIN not in str(settings.model_dump())


def test_openapi_documents_the_admin_schemes(both: TestClient) -> None:
    schema = both.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert {"AdminBearer", "AdminAPIKey"} <= set(schemes)
    paths = schema["paths"]
    for method, path, _ in CHANGING:
        template = path.replace("fake", "{name}").replace("spare", "{name}")
        operation = paths[template.replace("stable", "{label}")][method.lower()]
        required = {name for entry in operation["security"] for name in entry}
        assert {"AdminBearer", "AdminAPIKey"} <= required, path
        assert "403" in operation["responses"], path
    predict_security = paths["/v1/predict"]["post"]["security"]
    assert not {"AdminBearer", "AdminAPIKey"} & {name for e in predict_security for name in e}
