"""``GET /v1/models/{name}/versions/{version}/files/{file}`` serves the four card files of
the artifact contract and nothing else: every other name, and every traversal attempt
sent on the wire as an attacker would, is refused without a byte of the file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import FakeClassifier, image_bytes
from tests.support.live import connect, free_port, read_response, serving, status_of

SECRET = b"do-not-serve-0123456789"
CARD = {
    "metadata.json": ("application/json", json.dumps({"name": "fake", "version": 3}).encode()),
    "evaluation.json": ("application/json", json.dumps({"per_class": {}}).encode()),
    "confusion_matrix.png": ("image/png", image_bytes()),
    "training_curves.png": ("image/png", image_bytes(size=(30, 10))),
}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store holding fake/3 with its card files and what must never be served: the
    model, the golden set, a file beside the version, and one outside the store."""
    root = tmp_path / "store"
    version = root / "fake" / "3"
    (version / "golden").mkdir(parents=True)
    for name, (_, data) in CARD.items():
        (version / name).write_bytes(data)
    (version / "model.keras").write_bytes(SECRET)
    (version / "golden" / "golden.json").write_bytes(SECRET)
    (root / "fake" / "secret.txt").write_bytes(SECRET)
    (root / "secret.txt").write_bytes(SECRET)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return root


def settings_for(store: Path, **more: object) -> Settings:
    return Settings(model_store=store, model_name="fake", decode_threads=1, **more)  # type: ignore[arg-type]


@pytest.fixture
def client(store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(store), classifier=FakeClassifier())) as test_client:
        yield test_client


@pytest.mark.parametrize("name", list(CARD))
def test_each_card_file_is_served_as_it_is(client: TestClient, name: str) -> None:
    content_type, data = CARD[name]
    response = client.get(f"/v1/models/fake/versions/3/files/{name}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/models/fake/versions/3/files/model.keras", 404),
        ("/v1/models/fake/versions/3/files/golden.json", 404),
        ("/v1/models/fake/versions/3/files/secret.txt", 404),
        ("/v1/models/fake/versions/3/files/METADATA.JSON", 404),
        ("/v1/models/fake/versions/4/files/metadata.json", 404),
        ("/v1/models/other/versions/3/files/metadata.json", 404),
        ("/v1/models/fake/versions/three/files/metadata.json", 422),
        ("/v1/models/fake/versions/-3/files/metadata.json", 404),
    ],
)
def test_anything_else_is_refused(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert SECRET not in response.content


def test_a_version_without_training_curves_says_so(client: TestClient, store: Path) -> None:
    (store / "fake" / "3" / "training_curves.png").unlink()  # artifacts from older trainers
    response = client.get("/v1/models/fake/versions/3/files/training_curves.png")
    assert response.status_code == 404
    assert (
        response.json()["error"]["message"] == "model 'fake' version 3 has no training_curves.png"
    )


def test_the_files_need_a_key_when_keys_are_configured(store: Path) -> None:
    app = create_app(settings_for(store, api_keys="k-123"), classifier=FakeClassifier())
    with TestClient(app) as client:
        path = "/v1/models/fake/versions/3/files/metadata.json"
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": "k-123"}).status_code == 200


# Sent byte for byte on a socket, as no client library would normalise them away.
TRAVERSALS = [
    "/v1/models/fake/versions/3/files/../model.keras",
    "/v1/models/fake/versions/3/files/..%2Fmodel.keras",
    "/v1/models/fake/versions/3/files/golden%2Fgolden.json",
    "/v1/models/fake/versions/3/files/..%2F..%2Fsecret.txt",
    "/v1/models/fake/versions/3/files/%2e%2e%2f%2e%2e%2f..%2f..%2fsecret.txt",
    "/v1/models/fake/versions/3/files/..%5c..%5csecret.txt",
    "/v1/models/fake/versions/3/files/%2Fetc%2Fpasswd",
    "/v1/models/fake/versions/3/files/metadata.json%00.png",
    "/v1/models/fake/versions/3/files/metadata.json/../../secret.txt",
    "/v1/models/fake/versions/3/../../secret.txt",
    "/v1/models/..%2F..%2F..%2Fetc/versions/3/files/metadata.json",
    "/v1/models/../versions/3/files/metadata.json",
    "/v1/models/..%2Fsecret.txt%23/versions/3/files/metadata.json",
    "/v1/models/fake/versions/3%2F..%2F..%2F/files/metadata.json",
    "/v1/models/fake/versions/..%2F3/files/metadata.json",
    "//v1/models/fake/versions/3/files/..%2f..%2f..%2fsecret.txt",
    "/v1/models/%2e%2e/versions/3/files/metadata.json",
    "/v1/models/fake%2F3%2Fgolden/versions/3/files/golden.json",
]


def test_traversal_attempts_on_the_wire_get_nothing(store: Path) -> None:
    settings = settings_for(store, port=free_port(), log_level="warning", access_log=False)
    app = create_app(settings, classifier=FakeClassifier())
    with serving(app, settings) as port:
        for path in TRAVERSALS:
            with connect(port) as sock:
                sock.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
                )
                response = read_response(sock)
            assert status_of(response) == 404, (path, response[:200])
            assert b'"code":"not_found"' in response, path
            assert SECRET not in response, path
        # and the route still serves what it should
        with connect(port) as sock:
            sock.sendall(
                b"GET /v1/models/fake/versions/3/files/metadata.json HTTP/1.1\r\n"
                b"Host: t\r\nConnection: close\r\n\r\n"
            )
            assert status_of(read_response(sock)) == 200
