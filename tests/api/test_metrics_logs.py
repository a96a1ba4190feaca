"""Request metrics at /metrics, the model info and queue depth, and the JSON access log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.model_store import ModelVersion
from service.serving.api.middleware.observability import new_request_id
from service.serving.app import create_app
from service.serving.logging_setup import (
    JsonFormatter,
    LineHandler,
    configure_logging,
    direct_handler,
    json_line,
)
from service.serving.server import server_config
from service.serving.settings import Settings
from tests.support.fakes import GREEN, FakeClassifier, image_bytes

KEY = "s3cret-Key-0123456789"
AUTH = {"X-API-Key": KEY}
CAPTION = "caption-that-must-not-be-logged"
PNG = image_bytes(GREEN)
HEX_ID = re.compile(r"[0-9a-f]{32}")


def scrape(client: TestClient) -> list[Sample]:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def predict(
    client: TestClient, data: bytes = PNG, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        "/v1/predict",
        files={"image": ("g.png", data)},
        data={"text": CAPTION},
        headers={**AUTH, **(headers or {})},
    )


def keyed_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        model_store=tmp_path,
        model_name="fake",
        api_keys=KEY,
        decode_threads=1,
        reload_poll_s=0,
        **overrides,
    )


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    """A client of a service with an API key configured."""
    with TestClient(create_app(keyed_settings(tmp_path), classifier=FakeClassifier())) as client:
        yield client


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The access log lines captured, as the JSON formatter writes them."""
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.name == "mmserve.access"
    ]


def test_request_counts_latency_items_and_model_info(keyed: TestClient) -> None:
    before = scrape(keyed)
    for _ in range(3):
        assert predict(keyed).status_code == 200
    assert predict(keyed, data=b"not an image").status_code == 400
    after = scrape(keyed)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"method": "POST", "route": "/v1/predict"}
    assert delta("mmserve_http_requests_total", **route, status="200") == 3
    assert delta("mmserve_http_requests_total", **route, status="400") == 1
    assert delta("mmserve_http_request_duration_seconds_count", **route, status="200") == 3
    assert delta("mmserve_http_request_duration_seconds_count", **route, status="400") == 1
    assert delta("mmserve_http_request_duration_seconds_sum", **route, status="200") > 0
    assert delta("mmserve_items_inferred_total") == 3
    # The scrape before this one is counted by now, under its template.
    assert delta("mmserve_http_requests_total", method="GET", route="/metrics", status="200") == 1
    info = [s for s in after if s.name == "mmserve_model_info"]
    assert [(s.labels, s.value) for s in info] == [
        ({"name": "fake", "version": "3", "device": "/CPU:0"}, 1.0)
    ]
    assert [s.value for s in after if s.name == "mmserve_queue_depth"] == [0.0]


def test_routes_are_labelled_by_template(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path, max_request_bytes=1000)
    with TestClient(create_app(settings, classifier=FakeClassifier())) as client:
        before = scrape(client)
        assert client.get("/v1/models/fake", headers=AUTH).status_code == 200
        assert client.get("/v1/models/nope", headers=AUTH).status_code == 404
        assert client.get("/no/such/path/12345").status_code == 404
        assert client.request("BREW", "/v1/predict", headers=AUTH).status_code == 405
        # Refused by the body limit before routing: still labelled by its route.
        assert predict(client, data=b"x" * 2000).status_code == 413
        after = scrape(client)

    def delta(**labels: str) -> float:
        name = "mmserve_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(route="/v1/models/{name}", status="200") == 1
    assert delta(route="/v1/models/{name}", status="404") == 1
    assert delta(route="unmatched", status="404", method="GET") == 1
    assert delta(route="/v1/predict", status="405", method="OTHER") == 1
    assert delta(route="/v1/predict", status="413", method="POST") == 1
    routes = {s.labels["route"] for s in after if s.name == "mmserve_http_requests_total"}
    assert not any("nope" in route or "12345" in route for route in routes)


def test_access_log_line_is_json_with_the_request_fields(
    keyed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mmserve"):
        response = predict(keyed, headers={"X-Request-ID": "req-42"})
        files = [("image", (f"{i}.png", PNG)) for i in range(3)]
        batch = keyed.post(
            "/v1/predict/batch", files=files, data={"text": ["a", "b", "c"]}, headers=AUTH
        )
    assert response.status_code == 200 and batch.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    single, multi = access_records(caplog)
    assert single.pop("latency_ms") > 0
    assert single.pop("time").endswith("+00:00")
    assert single == {
        "level": "info",
        "logger": "mmserve.access",
        "message": single["message"],
        "request_id": "req-42",
        "method": "POST",
        "route": "/v1/predict",
        "path": "/v1/predict",
        "status": 200,
        "items": 1,
        "model": "fake",
        "model_version": 3,
    }
    assert single["message"].startswith("POST /v1/predict 200 ")
    assert multi["route"] == "/v1/predict/batch" and multi["items"] == 3
    assert multi["request_id"] == batch.headers["x-request-id"]


@pytest.mark.parametrize(
    "sent", [None, "", "has space", "x" * 129, "tab\there", "caf\xe9".encode("latin-1")], ids=repr
)
def test_request_id_is_generated_when_absent_or_unacceptable(
    keyed: TestClient, caplog: pytest.LogCaptureFixture, sent: str | bytes | None
) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    with caplog.at_level(logging.INFO, logger="mmserve.access"):
        response = keyed.get("/health/live", headers=headers)
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id)
    [line] = access_records(caplog)
    assert line["request_id"] == request_id
    assert "items" not in line and "model" not in line


def test_new_request_ids_are_distinct_uuid4_hex_without_a_system_call(
    keyed: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:500]:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)

    def no_urandom(size: int) -> bytes:
        raise AssertionError("os.urandom called for a request id")

    monkeypatch.setattr(os, "urandom", no_urandom)
    response = keyed.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    assert HEX_ID.fullmatch(response.headers["x-request-id"])


def test_request_id_is_echoed_on_errors(keyed: TestClient) -> None:
    response = keyed.get("/v1/models", headers={"X-Request-ID": "a" * 128})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "a" * 128


def test_logs_hold_no_keys_headers_or_bodies(
    keyed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="mmserve"):
        assert predict(keyed).status_code == 200
        bearer = {"Authorization": f"Bearer {KEY}", "X-API-Key": KEY}
        assert predict(keyed, headers=bearer).status_code == 200
        assert keyed.get("/v1/models", headers={"X-API-Key": KEY + "-wrong"}).status_code == 401
    text = "\n".join([JsonFormatter().format(r) for r in caplog.records] + [caplog.text])
    assert "mmserve.access" in text
    assert KEY not in text
    assert CAPTION not in text
    assert PNG[:16].decode("latin-1") not in text and "PNG" not in text


def test_model_info_follows_a_hot_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def load(version: ModelVersion) -> FakeClassifier:
        fake = FakeClassifier()
        fake.version = version.version
        return fake

    app = create_app(keyed_settings(tmp_path), classifier=FakeClassifier(), loader=load)
    with TestClient(app) as client:
        (tmp_path / "fake" / "4").mkdir(parents=True)
        reload = client.post("/v1/models/fake/reload", headers=AUTH)
        assert reload.json()["version"] == 4
        info = [s.labels for s in scrape(client) if s.name == "mmserve_model_info"]
        assert info == [{"name": "fake", "version": "4", "device": "/CPU:0"}]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mmserve.access"):
            assert predict(client).status_code == 200
    assert access_records(caplog)[0]["model_version"] == 4


def test_configure_logging_writes_json_or_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as under plain uvicorn
    logger = logging.getLogger("mmserve")
    level = logger.level
    try:
        configure_logging("debug", "json")
        [handler] = logger.handlers
        assert isinstance(handler, logging.StreamHandler)
        stream = io.StringIO()
        handler.setStream(stream)
        logging.getLogger("mmserve.test").debug("hello %s", "there", extra={"answer": 42})
        line = json.loads(stream.getvalue())
        assert line["message"] == "hello there" and line["answer"] == 42
        assert line["level"] == "debug" and line["logger"] == "mmserve.test"

        configure_logging("info", "text")
        assert logger.handlers == [handler]  # reconfigured, not duplicated
        logging.getLogger("mmserve.test").info("plain")
        assert stream.getvalue().splitlines()[-1] == "INFO     mmserve.test: plain"
    finally:
        for extra_handler in list(logger.handlers):
            logger.removeHandler(extra_handler)
        logger.setLevel(level)


@pytest.fixture
def own_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LineHandler, io.StringIO]]:
    """The mmserve loggers configured as under ``mmserve serve`` (nothing on the root
    logger), writing to a string. pytest adds its capture handlers to the root logger again
    when the test itself runs: a test empties it with :func:`_root_bare` first."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    logger = logging.getLogger("mmserve")
    level = logger.level
    try:
        configure_logging("info", "json")
        [handler] = logger.handlers
        assert isinstance(handler, LineHandler)
        stream = io.StringIO()
        handler.setStream(stream)
        yield handler, stream
    finally:
        for extra_handler in list(logger.handlers):
            logger.removeHandler(extra_handler)
        logger.setLevel(level)


def _root_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


def _after_time(line: str) -> str:
    head, _, rest = line.partition(",")
    assert re.fullmatch(r'\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"', head), head
    return rest


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": "ab" * 16, "method": "POST", "status": 200, "latency_ms": 2.126},
        {"path": '/v1/\u00e9 "quoted" \\ \x7f \u2028', "items": 3, "model_version": 12},
        {"ok": True, "none": None, "big": 10**20, "tiny": 1e-7, "inf": float("inf")},
        {"list": [1, "a"], "object": Path("/x")},
    ],
    ids=["access", "escapes", "json-special", "fallback"],
)
def test_a_direct_line_is_the_formatters_line(fields: dict[str, Any]) -> None:
    record = logging.LogRecord("mmserve.access", logging.INFO, "f", 1, "m \u00e9", (), None)
    record.__dict__.update(fields)
    by_formatter = JsonFormatter().format(record)
    direct = json_line("info", "mmserve.access", "m \u00e9", fields)
    assert _after_time(direct) == _after_time(by_formatter)
    assert json.loads(direct)["time"][:4] == json.loads(by_formatter)["time"][:4]


def test_the_access_line_skips_logging_only_when_nothing_else_would_see_it(
    own_handler: tuple[LineHandler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    _root_bare(monkeypatch)
    handler, _ = own_handler
    access = logging.getLogger("mmserve.access")
    assert direct_handler(access) is handler
    checks: list[tuple[str, Any, Any]] = [
        ("a filter on the access logger", access.addFilter, access.removeFilter),
        ("a filter on the handler", handler.addFilter, handler.removeFilter),
    ]
    for name, add, remove in checks:
        add(logging.Filter("elsewhere"))
        try:
            assert direct_handler(access) is None, name
        finally:
            remove(access.filters[0] if access.filters else handler.filters[0])
    root = logging.getLogger()
    extra = logging.StreamHandler(io.StringIO())
    root.handlers = [extra]
    assert direct_handler(access) is None  # an application's root handler sees records
    root.handlers = []
    handler.setFormatter(logging.Formatter())
    assert direct_handler(access) is None  # text format: through logging
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.WARNING)
    assert direct_handler(access) is None
    handler.setLevel(logging.NOTSET)
    assert direct_handler(access) is handler


def test_served_requests_write_the_access_line_directly(
    tmp_path: Path, own_handler: tuple[LineHandler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    _root_bare(monkeypatch)
    handler, stream = own_handler
    direct: list[str] = []
    write_line = handler.write_line

    def spy(line: str) -> None:
        direct.append(line)
        write_line(line)

    monkeypatch.setattr(handler, "write_line", spy)
    with TestClient(create_app(keyed_settings(tmp_path), classifier=FakeClassifier())) as client:
        response = predict(client)
        assert response.status_code == 200
    [text] = [text for text in stream.getvalue().splitlines() if "mmserve.access" in text]
    assert direct == [text]  # written without a log record
    line = json.loads(text)
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["message"].startswith("POST /v1/predict 200 ")
    assert {k: line[k] for k in ("route", "status", "items", "model", "model_version")} == {
        "route": "/v1/predict",
        "status": 200,
        "items": 1,
        "model": "fake",
        "model_version": 3,
    }
    assert list(line) == [
        *("time", "level", "logger", "message", "request_id", "method", "route", "path"),
        *("status", "latency_ms", "items", "model", "model_version"),
    ]


def test_lines_of_one_loop_pass_are_written_in_one_write_and_in_order(
    own_handler: tuple[LineHandler, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    _root_bare(monkeypatch)
    handler, _ = own_handler
    writes: list[str] = []

    class Recorded(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return super().write(text)

    stream = Recorded()
    handler.setStream(stream)

    async def serve() -> None:
        handler.write_line("a")
        handler.write_line("b")
        assert writes == []  # written when the loop has run what is ready
        await asyncio.sleep(0)
        assert writes == ["a\nb\n"]
        handler.write_line("c")
        logging.getLogger("mmserve.test").warning("a record after c")
        handler.write_line("d")
        handler.flush()  # logging's shutdown: nothing waits after it
        assert stream.getvalue().endswith("d\n")

    asyncio.run(serve())
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["a", "b", "c"] and lines[4] == "d"
    assert json.loads(lines[3])["message"] == "a record after c"
    handler.write_line("e")  # off the loop's thread: at once
    assert writes[-1] == "e\n"


def test_exception_is_logged_as_json_field() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("mmserve.x", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed" and "ValueError: bad" in line["exception"]


@pytest.mark.parametrize("ours", [True, False])
def test_uvicorn_access_log_stays_off_whether_ours_is_on_or_off(tmp_path: Path, ours: bool) -> None:
    settings = keyed_settings(tmp_path, access_log=ours)
    config = server_config(create_app(settings, classifier=FakeClassifier()), settings)
    assert config.access_log is False


def test_access_log_can_be_turned_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = keyed_settings(tmp_path, access_log=False)
    with (
        TestClient(create_app(settings, classifier=FakeClassifier())) as client,
        caplog.at_level(logging.INFO, logger="mmserve.access"),
    ):
        assert predict(client).status_code == 200
    assert access_records(caplog) == []
