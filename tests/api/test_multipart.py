"""Multipart bodies as the service reads them: parts split anywhere across chunks, each text
part in its own charset, the closing boundary required, and the per-body part limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.testclient import TestClient

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.errors import assert_error
from tests.support.fakes import RED, FakeClassifier, assert_serves, expected, image_bytes

PNG = image_bytes(RED)
BOUNDARY = "partsboundary"
TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def field(name: str, value: bytes, content_type: str | None = None) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + value + b"\r\n"


def file(name: str, data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    return head.encode() + data + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()


def post(client: TestClient, body: bytes, path: str = "/v1/predict") -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": TYPE})


def probabilities(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    return [p["probability"] for p in response.json()["predictions"]]


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_a_body_split_anywhere_reads_the_same(
    settings: Settings, fake: FakeClassifier, size: int
) -> None:
    """Chunk edges fall inside boundaries, headers and data alike (no Content-Length)."""
    body = file("image", PNG) + field("text", "naïve café".encode()) + END

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    async def call() -> httpx.Response:
        app = create_app(settings, classifier=fake)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            return await client.post(
                "/v1/predict", content=chunks(), headers={"content-type": TYPE}
            )

    response = asyncio.run(call())
    assert "content-length" not in response.request.headers
    assert probabilities(response) == sorted(expected(PNG, "naïve café"), reverse=True)


def test_a_text_part_is_read_in_the_charset_it_names(client: TestClient) -> None:
    body = file("image", PNG) + field(
        "text", "café".encode("latin-1"), "text/plain; charset=latin-1"
    )
    response = post(client, body + END)
    assert probabilities(response) == sorted(expected(PNG, "café"), reverse=True)


def test_a_text_part_naming_an_unknown_charset_is_400(client: TestClient) -> None:
    body = file("image", PNG) + field("text", b"t", "text/plain; charset=no-such-charset")
    message = assert_error(post(client, body + END), 400, "bad_request")
    assert "no-such-charset" in message
    assert_serves(client)


def test_a_body_without_its_closing_boundary_is_400(
    client: TestClient, fake: FakeClassifier
) -> None:
    message = assert_error(
        post(client, file("image", PNG) + field("text", b"t")), 400, "bad_request"
    )
    assert "closing boundary" in message
    assert fake.calls == []
    assert_serves(client)


def test_a_part_without_a_name_is_400(client: TestClient) -> None:
    body = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nt\r\n".encode() + END
    assert_error(post(client, body), 400, "bad_request")
    assert_serves(client)


def test_more_file_parts_than_the_batch_limit_is_413(
    client: TestClient, settings: Settings, fake: FakeClassifier
) -> None:
    pairs = b"".join(
        file("image", PNG) + field("text", b"t") for _ in range(settings.max_batch_items + 1)
    )
    message = assert_error(post(client, pairs + END, "/v1/predict/batch"), 413, "payload_too_large")
    assert f"at most {settings.max_batch_items} items" in message
    assert fake.calls == []
    at_limit = b"".join(
        file("image", PNG) + field("text", b"t") for _ in range(settings.max_batch_items)
    )
    response = post(client, at_limit + END, "/v1/predict/batch")
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == settings.max_batch_items


def test_many_stray_fields_are_413(client: TestClient, settings: Settings) -> None:
    strays = b"".join(field(f"x{i}", b"1") for i in range(settings.max_batch_items + 9))
    body = file("image", PNG) + field("text", b"t") + strays + END
    assert_error(post(client, body, "/v1/predict/batch"), 413, "payload_too_large")
    assert_serves(client)


def test_a_file_part_over_a_mebibyte_is_read_whole(
    settings: Settings, fake: FakeClassifier
) -> None:
    """Files have no per-part limit of their own (the body limit bounds them): a PNG padded
    past 1 MiB after its end chunk decodes as the same image."""
    padded = PNG + bytes(1024 * 1024 + 10)
    with TestClient(create_app(settings, classifier=fake)) as client:
        response = post(client, file("image", padded) + field("text", b"t") + END)
    assert probabilities(response) == sorted(expected(PNG, "t"), reverse=True)
