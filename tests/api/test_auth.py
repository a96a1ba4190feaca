"""Optional API keys: open without keys; with keys, every route but the probes (and the API
docs) needs one, in either header, and a refusal never says what was wrong."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.serving.api.auth import key_matches
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import FakeClassifier, image_bytes

KEY = "k3y-Alpha-0123456789"
OTHER_KEY = "k3y-Beta-9876543210"
FILE_KEY = "k3y-from-file-ABCDEF"
PNG = image_bytes()

PROTECTED = ["/v1/models", "/v1/models/fake", "/metrics"]
OPEN = ["/health/live", "/health/ready", "/docs", "/openapi.json"]


def predict(client: TestClient, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(
        "/v1/predict", files={"image": ("x.png", PNG)}, data={"text": "t"}, headers=headers
    )


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "error": {"code": "unauthorized", "message": "a valid API key is required"}
    }


@pytest.fixture
def keyed(settings: Settings, fake: FakeClassifier) -> Iterator[TestClient]:
    keyed_settings = Settings(**{**settings.model_dump(), "api_keys": f"{KEY}, {OTHER_KEY}"})
    with TestClient(create_app(keyed_settings, classifier=fake)) as client:
        yield client


def test_without_keys_everything_is_open(client: TestClient) -> None:
    assert predict(client).status_code == 200
    for path in PROTECTED + OPEN:
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer {OTHER_KEY}"},
        {"X-API-Key": KEY},
        {"x-api-key": OTHER_KEY},
        {"Authorization": f"Bearer {KEY}", "X-API-Key": OTHER_KEY},
        # Other schemes belong to someone else (a proxy, say): not a wrong key.
        {"Authorization": f"Basic {OTHER_KEY}", "X-API-Key": KEY},
    ],
    ids=[
        "bearer",
        "bearer lower-case, second key",
        "x-api-key",
        "lower-case header",
        "both",
        "basic beside x-api-key",
    ],
)
def test_a_valid_key_in_either_header_is_let_in(keyed: TestClient, headers: dict[str, str]) -> None:
    response = predict(keyed, headers)
    assert response.status_code == 200, response.text
    for path in PROTECTED:
        assert keyed.get(path, headers=headers).status_code == 200, path


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": "Bearer "},
        {"X-API-Key": ""},
        {"X-API-Key": KEY.upper()},
        {"X-API-Key": f"{KEY},{OTHER_KEY}"},
        {"X-Api-Token": KEY},
        # One wrong key refuses the request, whatever the other header holds.
        {"Authorization": "Bearer wrong", "X-API-Key": KEY},
        {"Authorization": f"Bearer {KEY}", "X-API-Key": "wrong"},
    ],
    ids=[
        "none",
        "wrong",
        "longer",
        "prefix",
        "basic scheme",
        "no scheme",
        "empty bearer",
        "empty x-api-key",
        "wrong case",
        "two keys",
        "other header",
        "wrong bearer beside a valid x-api-key",
        "valid bearer beside a wrong x-api-key",
    ],
)
def test_anything_else_is_401_with_the_same_answer(
    keyed: TestClient, fake: FakeClassifier, headers: dict[str, str]
) -> None:
    assert_refused(predict(keyed, headers))
    for path in PROTECTED:
        assert_refused(keyed.get(path, headers=headers))
    assert fake.calls == []
    assert predict(keyed, {"X-API-Key": KEY}).status_code == 200


def test_the_key_is_checked_before_the_body(keyed: TestClient) -> None:
    # No 415 or 413 that would tell an outsider about the endpoint before the key does.
    response = keyed.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"})
    assert_refused(response)
    response = keyed.post("/v1/predict/batch", json={"instances": []})
    assert_refused(response)


def test_probes_and_api_docs_stay_open(keyed: TestClient) -> None:
    for path in OPEN:
        assert keyed.get(path).status_code == 200, path
    schema = keyed.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {
        "HTTPBearer",
        "APIKeyHeader",
        "AdminBearer",
        "AdminAPIKey",
    }
    assert "security" not in schema["paths"]["/health/ready"]["get"]
    assert "401" in schema["paths"]["/v1/predict"]["post"]["responses"]


def test_keys_from_a_file(settings: Settings, fake: FakeClassifier, tmp_path: Path) -> None:
    keys = tmp_path / "api_keys"
    keys.write_text(f"# rotated 2024-05-01\n\n  {FILE_KEY}  \n#{OTHER_KEY}\n", encoding="utf-8")
    file_settings = Settings(**{**settings.model_dump(), "api_keys_file": keys})
    assert file_settings.api_key_set == {FILE_KEY}
    with TestClient(create_app(file_settings, classifier=fake)) as client:
        assert predict(client, {"Authorization": f"Bearer {FILE_KEY}"}).status_code == 200
        # A commented-out key is no key.
        assert_refused(predict(client, {"X-API-Key": OTHER_KEY}))
        assert_refused(predict(client, {"X-API-Key": "# rotated 2024-05-01"}))
        assert client.get("/health/ready").status_code == 200


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = tmp_path / "secret"
    keys.write_text(FILE_KEY + "\n", encoding="utf-8")
    monkeypatch.setenv("MMSERVE_API_KEYS", f" {KEY} ,{OTHER_KEY},, ")
    monkeypatch.setenv("MMSERVE_API_KEYS_FILE", str(keys))
    settings = Settings()
    assert settings.api_key_set == {KEY, OTHER_KEY, FILE_KEY}
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert KEY not in shown and OTHER_KEY not in shown and FILE_KEY not in shown


@pytest.mark.parametrize("content", ["", "# only a comment\n\n   \n"], ids=["empty", "comments"])
def test_a_keys_file_without_keys_fails_start_up(tmp_path: Path, content: str) -> None:
    # Silently serving without authentication would be the worst outcome.
    keys = tmp_path / "api_keys"
    keys.write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError, match="holds no key") as error:
        Settings(api_keys=KEY, api_keys_file=keys)
    assert KEY not in str(error.value)


def test_a_missing_keys_file_fails_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read api_keys_file") as error:
        Settings(api_keys=KEY, api_keys_file=tmp_path / "nope")
    assert KEY not in str(error.value)


def test_keys_never_reach_the_logs(
    settings: Settings, fake: FakeClassifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed_settings = Settings(**{**settings.model_dump(), "api_keys": KEY})
    with TestClient(create_app(keyed_settings, classifier=fake)) as client:
        assert_refused(predict(client, {"Authorization": f"Bearer {OTHER_KEY}"}))
        assert_refused(client.get("/metrics", headers={"X-API-Key": OTHER_KEY}))
        assert predict(client, {"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
    assert "refused POST /v1/predict" in caplog.text  # the refusals are logged...
    assert KEY not in caplog.text and OTHER_KEY not in caplog.text  # ...without any key


def test_key_matching() -> None:
    keys = frozenset({KEY, "clé-ünïcode"})
    assert key_matches(KEY, keys)
    # Header values reach the app as Latin-1 text of the UTF-8 octets the client sent.
    assert key_matches("clé-ünïcode".encode().decode("latin-1"), keys)
    assert not key_matches("", keys)
    assert not key_matches(KEY, frozenset())
