"""Input limits: body size, image format and pixels, text encoding. Each refusal is a 4xx in
the error shape, and the service answers a valid request right after it."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.preprocessing import decode_image
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.errors import assert_error
from tests.support.fakes import GREEN, RED, FakeClassifier, assert_serves, expected, image_bytes

MIB = 1024 * 1024
PNG = image_bytes()
JPEG = image_bytes(RED, fmt="JPEG")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels (400 M pixels: 400 MB once
    decoded) whose file is about 50 KB."""
    row = bytes(1 + (side + 7) // 8)  # filter byte, then 8 pixels a byte
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# --- images -------------------------------------------------------------------------------


def test_the_bomb_builder_makes_a_real_png() -> None:
    pixels = decode_image(png_bomb(64), (8, 8))
    assert pixels.shape == (8, 8, 3) and not pixels.any()


def test_decompression_bomb_is_refused_before_decoding(
    client: TestClient, fake: FakeClassifier
) -> None:
    bomb = png_bomb()
    assert len(bomb) < 100_000
    response = client.post("/v1/predict", files={"image": ("x.png", bomb)}, data={"text": "t"})
    message = assert_error(response, 413, "payload_too_large")
    assert "20000x20000" in message
    assert fake.calls == []
    assert_serves(client)


def test_bomb_is_refused_at_the_default_pixel_limit(tmp_path: Path, fake: FakeClassifier) -> None:
    settings = Settings(model_store=tmp_path, model_name="fake", decode_threads=1)
    with TestClient(create_app(settings, classifier=fake)) as client:
        response = client.post(
            "/v1/predict", files={"image": ("x.png", png_bomb())}, data={"text": "t"}
        )
        assert_error(response, 413, "payload_too_large")
        assert_serves(client)


def test_one_pixel_image_is_served(client: TestClient) -> None:
    one = image_bytes(GREEN, size=(1, 1))
    response = client.post("/v1/predict", files={"image": ("1.png", one)}, data={"text": ""})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "green"


def test_format_comes_from_the_content_not_the_name(client: TestClient) -> None:
    # A PNG dressed up as a JPEG: name, part content type and all.
    response = client.post(
        "/v1/predict", files={"image": ("x.jpg", PNG, "image/jpeg")}, data={"text": "t"}
    )
    assert response.status_code == 200, response.text
    got = [p["probability"] for p in response.json()["predictions"]]
    assert got == sorted(expected(PNG, "t"), reverse=True)


@pytest.fixture
def png_only(settings: Settings, fake: FakeClassifier) -> Any:
    png_settings = settings.model_copy(update={"allowed_image_formats": frozenset({"PNG"})})
    with TestClient(create_app(png_settings, classifier=fake)) as client:
        yield client


def test_a_real_image_of_a_disallowed_format_is_415(png_only: TestClient) -> None:
    response = png_only.post(
        "/v1/predict", files={"image": ("x.png", JPEG, "image/png")}, data={"text": "t"}
    )
    message = assert_error(response, 415, "unsupported_media_type")
    assert "JPEG" in message and "PNG" in message
    body = {"instances": [{"image": {"b64": base64.b64encode(JPEG).decode()}, "text": "t"}]}
    assert_error(png_only.post("/v1/predict/batch", json=body), 415, "unsupported_media_type")
    assert_serves(png_only)


def test_allowed_formats_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSERVE_ALLOWED_IMAGE_FORMATS", "png, jpg")
    assert Settings().allowed_image_formats == {"PNG", "JPEG"}


# --- malformed requests -------------------------------------------------------------------

MULTIPART_NO_BOUNDARY = {"content-type": "multipart/form-data"}
BROKEN: dict[str, tuple[dict[str, Any], int, str]] = {
    "empty file": (
        {"files": {"image": ("x.png", b"")}, "data": {"text": "t"}},
        400,
        "invalid_image",
    ),
    "truncated jpeg": (
        {"files": {"image": ("x.jpg", JPEG[: len(JPEG) // 2])}, "data": {"text": "t"}},
        400,
        "invalid_image",
    ),
    "png header only": (
        {"files": {"image": ("x.png", PNG[:40])}, "data": {"text": "t"}},
        400,
        "invalid_image",
    ),
    "random bytes": (
        {"files": {"image": ("x.png", bytes(range(256)) * 4)}, "data": {"text": "t"}},
        400,
        "invalid_image",
    ),
    "neither image nor text field": (
        {"data": {"other": "t"}, "files": {"x": ("x", b"")}},
        422,
        "missing_modalities",
    ),
    "unparseable multipart": (
        {
            "content": b"garbage, not multipart",
            "headers": {"content-type": "multipart/form-data; boundary=xyz"},
        },
        400,
        "bad_request",
    ),
    "multipart without boundary": (
        {"content": b"whatever", "headers": MULTIPART_NO_BOUNDARY},
        400,
        "bad_request",
    ),
    "text/plain body": (
        {"content": b"an image, honest", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    "invalid utf-8 text": (
        {"files": {"image": ("x.png", PNG), "text": (None, b"caf\xe9 \xff\xfe")}},
        400,
        "bad_request",
    ),
    "utf-8 encoded surrogate": (
        {"files": {"image": ("x.png", PNG), "text": (None, b"\xed\xa0\x80")}},
        400,
        "bad_request",
    ),
    "text part over 1 MiB": (
        {"files": {"image": ("x.png", PNG), "text": (None, b"x" * (MIB + 1))}},
        413,
        "payload_too_large",
    ),
    "invalid content-length": (
        {"content": b"abc", "headers": {"content-type": "text/plain", "content-length": "abc"}},
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_requests_are_4xx(client: TestClient, fake: FakeClassifier, case: str) -> None:
    request, status, code = BROKEN[case]
    assert_error(client.post("/v1/predict", **request), status, code)
    assert fake.calls == []
    assert_serves(client)


def test_invalid_utf8_text_names_the_problem(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", files={"image": ("x.png", PNG), "text": (None, b"caf\xe9")}
    )
    message = assert_error(response, 400, "bad_request")
    assert "'text'" in message and "utf-8" in message.lower()


def test_non_ascii_utf8_text_is_accepted(client: TestClient) -> None:
    text = "naïve café ☕ 猫"
    response = client.post("/v1/predict", files={"image": ("x.png", PNG)}, data={"text": text})
    assert response.status_code == 200, response.text
    got = [p["probability"] for p in response.json()["predictions"]]
    assert got == sorted(expected(PNG, text), reverse=True)


@pytest.mark.parametrize(
    "body",
    [b'{"instances": [{"image": {"b64": "AAAA"}, "text": "caf\xe9"}]}', b"\xff\xfe{}"],
    ids=["invalid utf-8 in a string", "invalid utf-8 outside"],
)
def test_invalid_utf8_json_is_400(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/v1/predict/batch", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "bad_request")
    assert_serves(client)


def test_lone_surrogate_escape_in_json_is_422(client: TestClient) -> None:
    # Valid JSON and valid UTF-8, but "\ud800" decodes to a lone surrogate: no real text,
    # and one the model's string tensor could not hold.
    b64 = base64.b64encode(PNG).decode()
    body = '{"instances": [{"image": {"b64": "' + b64 + '"}, "text": "\\ud800"}]}'
    response = client.post(
        "/v1/predict/batch", content=body, headers={"content-type": "application/json"}
    )
    message = assert_error(response, 422, "unprocessable_input")
    assert "surrogate" in message
    assert_serves(client)


# --- body size ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch"])
def test_huge_declared_length_is_refused_unread(client: TestClient, path: str) -> None:
    response = client.post(
        path,
        content=b"--xyz\r\n",
        headers={
            "content-type": "multipart/form-data; boundary=xyz",
            "content-length": str(10 * 1024**3),
        },
    )
    message = assert_error(response, 413, "payload_too_large")
    assert str(10 * 1024**3) in message
    assert response.headers["connection"] == "close"
    assert_serves(client)


def test_body_at_the_limit_with_declared_length_is_served(
    settings: Settings, fake: FakeClassifier
) -> None:
    request = httpx.Request(
        "POST", "http://x/v1/predict", files={"image": ("x.png", PNG)}, data={"text": "t"}
    )
    size = len(request.read())
    exact = settings.model_copy(update={"max_request_bytes": size})
    with TestClient(create_app(exact, classifier=fake)) as client:
        response = client.post("/v1/predict", files={"image": ("x.png", PNG)}, data={"text": "t"})
        assert response.status_code == 200, response.text
    smaller = settings.model_copy(update={"max_request_bytes": size - 1})
    with TestClient(create_app(smaller, classifier=fake)) as client:
        response = client.post("/v1/predict", files={"image": ("x.png", PNG)}, data={"text": "t"})
        assert_error(response, 413, "payload_too_large")


def test_gets_and_probes_ignore_the_body_limit(settings: Settings, fake: FakeClassifier) -> None:
    tiny = settings.model_copy(update={"max_request_bytes": 1})
    with TestClient(create_app(tiny, classifier=fake)) as client:
        for path in ("/health/live", "/health/ready", "/v1/models", "/metrics"):
            response = client.get(path, headers={"content-length": "1000"})
            assert response.status_code == 200, (path, response.text)


# Bodies sent without Content-Length (chunked): the generator records how much was pulled.

BOUNDARY = "limitsboundary"
MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
_FILE_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="text"\r\n\r\nt\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode()
_FILE_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


class Pulled:
    """An async body of ``count`` chunks of ``size`` bytes that counts what was taken."""

    def __init__(self, first: bytes, count: int, size: int, last: bytes) -> None:
        self.first, self.count, self.size, self.last = first, count, size, last
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += 1
        yield self.first
        for _ in range(self.count):
            self.pulled += 1
            yield bytes(self.size)
        self.pulled += 1
        yield self.last


async def _call_streaming(app: FastAPI, path: str, content_type: str, body: Pulled) -> Any:
    """POST ``body`` chunk by chunk (no Content-Length) to ``app``, lifespan running; then
    a valid request on the same app."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.post(path, content=body, headers={"content-type": content_type})
        assert "content-length" not in response.request.headers
        valid = await client.post(
            "/v1/predict", files={"image": ("ok.png", PNG)}, data={"text": "ok"}
        )
        return response, valid


@pytest.fixture
def limited_app(settings: Settings, fake: FakeClassifier) -> FastAPI:
    return create_app(settings.model_copy(update={"max_request_bytes": 4 * MIB}), fake)


@pytest.mark.parametrize(
    ("path", "content_type", "first", "last"),
    [
        ("/v1/predict", MULTIPART_TYPE, _FILE_HEAD, _FILE_TAIL),
        ("/v1/predict/batch", MULTIPART_TYPE, _FILE_HEAD, _FILE_TAIL),
        ("/v1/predict/batch", "application/json", b'{"instances": [], "x": "', b'"}'),
    ],
    ids=["predict multipart", "batch multipart", "batch json"],
)
def test_undeclared_oversized_body_is_cut_off_early(
    limited_app: FastAPI,
    fake: FakeClassifier,
    path: str,
    content_type: str,
    first: bytes,
    last: bytes,
) -> None:
    body = Pulled(first, count=64, size=MIB, last=last)  # 64 MiB against a 4 MiB limit
    response, valid = asyncio.run(_call_streaming(limited_app, path, content_type, body))
    message = assert_error(response, 413, "payload_too_large")
    assert str(4 * MIB) in message
    assert response.headers["connection"] == "close"
    # The read that passes 4 MiB fails, and nothing after it is read (64 MiB were on offer).
    assert body.pulled <= 6, body.pulled
    assert valid.status_code == 200, valid.text
    assert fake.calls == [1]


def test_undeclared_body_under_the_limit_is_served(limited_app: FastAPI) -> None:
    image = image_bytes(GREEN)
    body = Pulled(_FILE_HEAD + image, count=0, size=0, last=_FILE_TAIL)
    response, _ = asyncio.run(_call_streaming(limited_app, "/v1/predict", MULTIPART_TYPE, body))
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "green"
    assert "connection" not in response.headers


def test_answer_before_the_body_is_read_closes_the_connection(limited_app: FastAPI) -> None:
    # 415 is decided from the headers alone; the unread body must not be drained by the server.
    body = Pulled(b"", count=3, size=MIB, last=b"")
    response, _ = asyncio.run(_call_streaming(limited_app, "/v1/predict", "text/plain", body))
    assert_error(response, 415, "unsupported_media_type")
    assert response.headers["connection"] == "close"
    assert body.pulled <= 1


def test_decoded_pixels_of_a_tiny_image_are_sane() -> None:
    pixels = decode_image(image_bytes(GREEN, size=(1, 1)), (8, 8))
    assert pixels.shape == (8, 8, 3) and np.all(pixels == np.array(GREEN, dtype=np.uint8))
