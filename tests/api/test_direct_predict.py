"""``mmserve serve``'s connections answer the common ``POST /v1/predict`` themselves
(:class:`service.serving.api.v1.plain.DirectPredict`), exactly as the app would: the same
answers, headers, errors, order and connection handling, on a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.serving.api.state import app_state
from service.serving.api.v1 import plain
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import BLUE, GREEN, LABELS, RED, FakeClassifier, image_bytes
from tests.support.live import connect, free_port, read_response, serving, status_of

# A query the FastAPI route accepts and that changes nothing: every class, as without it.
EVERY_CLASS = f"?top_k={len(LABELS)}"
BOUNDARY = "b0undary"


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        model_store=tmp_path,
        model_name="fake",
        port=free_port(),
        reload_poll_s=0,
        max_text_chars=50,
        **overrides,
    )


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests the connections answered themselves."""
    calls: list[int] = []
    original = plain.DirectPredict.answer

    async def counting(self: plain.DirectPredict, *args: Any) -> plain.DirectAnswer:
        calls.append(1)
        return await original(self, *args)

    monkeypatch.setattr(plain.DirectPredict, "answer", counting)
    return calls


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    settings = _settings(tmp_path)
    with serving(create_app(settings, classifier=FakeClassifier()), settings) as live_port:
        yield live_port


def _pair(color: tuple[int, int, int] = RED, text: str = "hi") -> dict[str, Any]:
    return {"files": {"image": ("x.png", image_bytes(color), "image/png")}, "data": {"text": text}}


def _post(port: int, query: str = "", **kwargs: Any) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/predict{query}", timeout=10, **kwargs)


def _raw_request(
    color: tuple[int, int, int], query: str = "", version: str = "1.1", close: bool = False
) -> bytes:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="text"\r\n\r\nhi\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image_bytes(color)
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST /v1/predict{query} HTTP/{version}\r\nHost: test\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], Any]]:
    """The responses in ``raw`` (Content-Length framed), in order."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        answers.append((int(lines[0].split()[1]), headers, json.loads(rest[:length])))
        raw = rest[length:]
    return answers


def test_the_same_answers_headers_and_errors_as_the_app(port: int, taken: list[int]) -> None:
    cases: list[dict[str, Any]] = [
        _pair(),
        {"data": {"text": "text only"}},
        {"files": {"image": ("x.png", image_bytes(RED), "image/png")}},
        {"data": {"text": ""}},  # neither modality: 422
        {"data": {"text": "x" * 51}},  # over max_text_chars: 422
        {"content": b"{}", "headers": {"content-type": "application/json"}},  # 415
        {"files": {"image": ("x.png", b"not an image", "image/png")}, "data": {"text": "x"}},
        {**_pair(), "headers": {"x-request-id": "my-own-id"}},
    ]
    for case in cases:
        before = len(taken)
        direct = _post(port, **case)
        assert len(taken) == before + 1, "the connection answered it"
        routed = _post(port, EVERY_CLASS, **case)
        assert len(taken) == before + 1, "a query string goes to the app"
        assert direct.status_code == routed.status_code, case
        assert direct.json() == routed.json(), case
        for header in (
            "content-type",
            "content-length",
            "x-model-name",
            "x-model-version",
            "connection",
            "server",
        ):
            assert direct.headers.get(header) == routed.headers.get(header), (header, case)
        assert list(direct.headers) == list(routed.headers), case  # names and their order
    assert _post(port, **cases[-1]).headers["x-request-id"] == "my-own-id"
    assert _post(port, **_pair(GREEN)).json()["label"] == "green"
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'mmserve_http_requests_total{method="POST",route="/v1/predict",status="200"}' in metrics


def test_pipelined_requests_are_answered_in_order(port: int, taken: list[int]) -> None:
    """The second goes to the app (a query string) between two answered directly; all
    three arrive in one write, and come back in the order they were sent."""
    with connect(port) as sock:
        sock.sendall(
            _raw_request(RED) + _raw_request(GREEN, "?top_k=1") + _raw_request(BLUE, close=True)
        )
        answers = _responses(read_response(sock))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [body["label"] for _, _, body in answers] == ["red", "green", "blue"]
    assert [len(body["predictions"]) for _, _, body in answers] == [3, 1, 3]
    assert answers[-1][1]["connection"] == "close"
    assert len(taken) == 2


def test_early_answers_and_closing_requests_close_the_connection(
    port: int, taken: list[int]
) -> None:
    # Refused for its content type before its body is read: the rest is not waited for.
    with connect(port) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{}"
        )
        response = read_response(sock)  # returns once the server closes
    assert status_of(response) == 415
    assert b"\r\nconnection: close\r\n" in response
    # HTTP/1.0 and Connection: close are answered, then closed, as uvicorn does.
    for raw in (_raw_request(RED, version="1.0"), _raw_request(RED, close=True)):
        with connect(port) as sock:
            sock.sendall(raw)
            [(status, headers, body)] = _responses(read_response(sock))
        assert (status, headers["connection"], body["label"]) == (200, "close", "red")
    assert len(taken) == 3


def test_a_kept_alive_connection_serves_the_next_request(port: int) -> None:
    with connect(port) as sock:
        for color, label in ((RED, "red"), (BLUE, "blue")):
            sock.sendall(_raw_request(color))
            received = b""
            while not _complete(received):
                chunk = sock.recv(65536)
                assert chunk, "the server closed a kept-alive connection"
                received += chunk
            [(status, headers, body)] = _responses(received)
            assert (status, body["label"]) == (200, label)
            assert "connection" not in headers


def _complete(raw: bytes) -> bool:
    head, found, rest = raw.partition(b"\r\n\r\n")
    if not found:
        return False
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return len(rest) >= length


def test_an_unexpected_error_gets_the_apps_500(
    port: int, taken: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(*args: Any) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(plain, "_answer_body", failing)
    direct = _post(port, **_pair())
    assert len(taken) == 1
    assert direct.status_code == 500
    assert direct.json() == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
    assert _post(port, **_pair()).status_code == 500  # and the server still answers


@pytest.mark.parametrize("overrides", [{"direct_predict": False}, {"api_keys": "k" * 24}])
def test_turned_off_or_with_keys_every_request_goes_to_the_app(
    tmp_path: Path, taken: list[int], overrides: dict[str, Any]
) -> None:
    settings = _settings(tmp_path, **overrides)
    with serving(create_app(settings, classifier=FakeClassifier()), settings) as live_port:
        headers = {"authorization": f"Bearer {'k' * 24}"}
        response = _post(live_port, **_pair(), headers=headers)
    assert response.status_code == 200
    assert response.json()["label"] == "red"
    assert taken == []


def test_a_body_over_the_limit_goes_to_the_app(tmp_path: Path, taken: list[int]) -> None:
    settings = _settings(tmp_path, max_request_bytes=100)
    with serving(create_app(settings, classifier=FakeClassifier()), settings) as live_port:
        response = _post(live_port, **_pair())
    assert response.status_code == 413
    assert taken == []


def test_a_client_gone_mid_body_frees_its_place(tmp_path: Path, taken: list[int]) -> None:
    """Its request no longer counts as in flight (nor as on its way to the queue), and the
    server answers the next one."""
    settings = _settings(tmp_path)
    app = create_app(settings, classifier=FakeClassifier())
    admission = app_state(app).admission
    assert admission is not None
    with serving(app, settings) as live_port:
        raw = _raw_request(RED)
        with connect(live_port) as sock:
            sock.sendall(raw[: len(raw) // 2])
            deadline = time.monotonic() + 10
            while admission.in_flight != 1:
                assert time.monotonic() < deadline, "the request was never let in"
                time.sleep(0.01)
        while admission.in_flight != 0:
            assert time.monotonic() < deadline, "the request still counts as in flight"
            time.sleep(0.01)
        with connect(live_port) as sock:
            sock.sendall(_raw_request(GREEN, close=True))
            [(status, _, body)] = _responses(read_response(sock))
    assert (status, body["label"]) == (200, "green")
    assert len(taken) == 2


def test_an_app_with_middleware_it_does_not_know_answers_every_request(
    tmp_path: Path, taken: list[int]
) -> None:
    """Middleware a deployment adds (here one that tags every answer) must see the
    request: the connections leave it to the app."""

    class Tagging:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async def tagged(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message["headers"], (b"x-tag", b"1")]}
                await send(message)

            await self.app(scope, receive, tagged)

    settings = _settings(tmp_path)
    app = create_app(settings, classifier=FakeClassifier())
    app.add_middleware(Tagging)
    with serving(app, settings) as live_port:
        response = _post(live_port, **_pair())
    assert (response.status_code, response.headers.get("x-tag")) == (200, "1")
    assert taken == []


# --- any body, both ways ------------------------------------------------------------------

# Mostly the parts the route reads, so that many bodies are answered 200; the rest are not.
_PART_NAMES = st.one_of(
    st.sampled_from(["image", "text"]),
    st.sampled_from(["images", "caption", "", "Image", "text\u00e9"]),
)


@st.composite
def _parts(draw: st.DrawFn) -> bytes:
    """A multipart body's parts with ``BOUNDARY``, well formed or not."""
    body = b""
    for _ in range(draw(st.integers(0, 4))):
        name = draw(_PART_NAMES)
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if name == "image" or draw(st.integers(0, 3)) == 0:
            disposition += f'; filename="{draw(st.sampled_from(["x.png", "", "a b.jpg"]))}"'
        headers = [disposition]
        if draw(st.booleans()):
            kinds = ["image/png", "image/jpeg", "text/plain", "application/octet-stream", "x"]
            headers.append(f"Content-Type: {draw(st.sampled_from(kinds))}")
        images = st.sampled_from([image_bytes(RED), image_bytes(BLUE, fmt="JPEG"), b""])
        texts = st.text(max_size=60).map(str.encode)
        junk = st.binary(max_size=64)
        payload = draw(
            st.one_of(images, junk, texts) if name == "image" else st.one_of(texts, junk, images)
        )
        body += f"--{BOUNDARY}\r\n".encode() + "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n"
        body += payload + b"\r\n"
    if draw(st.integers(0, 3)):
        body += f"--{BOUNDARY}--\r\n".encode()
    else:
        body += draw(st.sampled_from([f"--{BOUNDARY}--", "", "--other--\r\n"])).encode()
    return body if draw(st.integers(0, 4)) else body[: draw(st.integers(0, len(body)))]


CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
_CONTENT_TYPES = st.one_of(
    st.just(CONTENT_TYPE),
    st.sampled_from(
        [
            f'multipart/form-data; boundary="{BOUNDARY}"',
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/mixed; boundary=" + BOUNDARY,
            "application/json",
            "text/plain",
            "nonsense",
            None,
        ]
    ),
)


@st.composite
def _well_formed(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """An image, a text or both, as the client sends them (texts may be over the limit)."""
    parts = []
    if draw(st.booleans()):
        image = draw(st.sampled_from([image_bytes(RED), image_bytes(GREEN, fmt="JPEG")]))
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + image
            + b"\r\n"
        )
    if not parts or draw(st.booleans()):
        text = draw(st.text(max_size=60))
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'.encode()
            + text.encode()
            + b"\r\n"
        )
    order = draw(st.permutations(parts))
    return b"".join(order) + f"--{BOUNDARY}--\r\n".encode(), CONTENT_TYPE


_REQUESTS = st.one_of(_well_formed(), st.tuples(_parts(), _CONTENT_TYPES))


def test_any_body_gets_the_same_answer_as_through_the_app(tmp_path: Path, taken: list[int]) -> None:
    """Well-formed or broken bodies, under any content type: the connection's answer and
    the app's have the same status, JSON and header names in the same order."""
    settings = _settings(tmp_path)
    with (
        serving(create_app(settings, classifier=FakeClassifier()), settings) as live_port,
        httpx.Client(base_url=f"http://127.0.0.1:{live_port}", timeout=10) as client,
    ):

        @hypothesis_settings(max_examples=150, deadline=None)
        @given(request=_REQUESTS)
        def check(request: tuple[bytes, str | None]) -> None:
            body, content_type = request
            headers = {} if content_type is None else {"content-type": content_type}
            before = len(taken)
            direct = client.post("/v1/predict", content=body, headers=headers)
            assert len(taken) == before + 1, "the connection answered it"
            routed = client.post(f"/v1/predict{EVERY_CLASS}", content=body, headers=headers)
            assert len(taken) == before + 1, "a query string goes to the app"
            assert direct.status_code == routed.status_code
            assert direct.json() == routed.json()
            assert list(direct.headers) == list(routed.headers)  # names and their order
            for header in ("content-type", "content-length", "connection", "retry-after"):
                assert direct.headers.get(header) == routed.headers.get(header), header

        check()
