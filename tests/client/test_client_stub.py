"""The client against a scripted server: retries, errors, auth header, probes, and the CLI's
error lines. Fast: no model, no TensorFlow."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.client import (
    APIError,
    AsyncClient,
    Client,
    ClientError,
    TransportError,
    UnavailableError,
)
from service.client.core import JITTER, RetryPolicy
from service.main import cli
from tests.support.stub_server import PREDICTION, Reply, Script, error, serve

CLOSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens there in the test machine


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[str, Script]]:
    script = Script()
    with serve(script) as url:
        yield url, script


@pytest.fixture
def server(stub: tuple[str, Script]) -> tuple[str, Script]:
    stub[1].reset()
    return stub


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def overloaded(retry_after: str = "0") -> Reply:
    return error(503, "overloaded", "queue full", **{"Retry-After": retry_after})


def test_retries_503_honouring_retry_after_then_succeeds(server: tuple[str, Script]) -> None:
    url, script = server
    script.on("/v1/predict", overloaded(), overloaded(), Reply())
    with Client(url, retries=3, backoff=0) as client:
        prediction = client.predict(png(), "a cat")
    assert len(script.hits) == 3
    assert prediction.model == "stub" and prediction.version == 7 and prediction.label == "cat"
    assert prediction.ranked == [("cat", 0.75), ("dog", 0.2), ("bird", 0.05)]
    assert prediction.to_dict() == PREDICTION


def test_async_client_retries_the_same_way(server: tuple[str, Script]) -> None:
    url, script = server
    script.on("/v1/predict", overloaded(), overloaded(), Reply())

    async def main() -> list[tuple[str, float]]:
        async with AsyncClient(url, retries=3, backoff=0) as client:
            return (await client.predict(png(), "a cat", top_k=3)).ranked

    assert asyncio.run(main())[0] == ("cat", 0.75)
    assert len(script.hits) == 3
    assert ("top_k", "3") in script.hits[0].form


@pytest.mark.parametrize("status", [400, 401, 404, 413, 415, 422])
def test_4xx_is_raised_at_once_with_the_service_error(
    server: tuple[str, Script], status: int
) -> None:
    url, script = server
    script.on("/v1/predict", error(status, "invalid_image", "cannot decode image"), Reply())
    with Client(url, retries=3, backoff=0) as client, pytest.raises(APIError) as info:
        client.predict(b"junk", "a cat")
    assert len(script.hits) == 1
    assert (info.value.status, info.value.code) == (status, "invalid_image")
    assert info.value.message == "cannot decode image"


def test_gives_up_after_retries_with_503(server: tuple[str, Script]) -> None:
    url, script = server
    script.on("/v1/predict", overloaded())
    with Client(url, retries=2, backoff=0) as client, pytest.raises(ClientError) as info:
        client.predict(png(), "a cat")
    assert isinstance(info.value, UnavailableError)
    assert (info.value.status, info.value.code, info.value.message) == (
        503,
        "overloaded",
        "queue full",
    )
    assert len(script.hits) == 3  # the first attempt and 2 retries


def test_non_json_error_body_still_gives_status(server: tuple[str, Script]) -> None:
    url, script = server
    script.on("/v1/models", Reply(500, "upstream exploded"))
    with Client(url, retries=3, backoff=0) as client, pytest.raises(APIError) as info:
        client.models()
    assert info.value.status == 500 and info.value.code == "http_500"
    assert len(script.hits) == 1


def test_connection_refused_is_retried_then_raised() -> None:
    with Client(CLOSED_URL, retries=2, backoff=0) as client, pytest.raises(TransportError) as info:
        client.predict(png(), "a cat")
    assert info.value.status is None and "Connect" in info.value.message


def test_api_key_sent_as_bearer_and_batch_parts_in_order(server: tuple[str, Script]) -> None:
    url, script = server
    result = {"label": "cat", "predictions": PREDICTION["predictions"]}
    script.on(
        "/v1/predict/batch", Reply(200, {"model": "stub", "version": 7, "results": [result] * 2})
    )
    with Client(url, api_key="s3cret") as client:
        predictions = client.predict_batch([(png(), "first"), (b"second image", "second")])
    assert [p.label for p in predictions] == ["cat", "cat"]
    (hit,) = script.hits
    assert hit.headers["authorization"] == "Bearer s3cret"
    assert [v for k, v in hit.form if k == "text"] == ["first", "second"]
    assert [v for k, v in hit.form if k == "image"] == [png(), b"second image"]


def test_probes_are_not_retried_and_false_when_unreachable(server: tuple[str, Script]) -> None:
    url, script = server
    script.on("/health/ready", overloaded())
    script.on("/health/live", Reply(200, {"status": "alive"}))
    with Client(url, retries=3, backoff=0) as client:
        assert client.ready() is False
        assert client.health() is True
    assert len(script.hits) == 2
    with Client(CLOSED_URL, retries=3, backoff=0) as client:
        assert client.health() is False


def test_models_are_typed(server: tuple[str, Script]) -> None:
    url, script = server
    model = {
        "name": "stub",
        "version": 7,
        "labels": ["cat", "dog"],
        "device": "/CPU:0",
        "metrics": {},
    }
    script.on("/v1/models", Reply(200, {"models": [model]}))
    with Client(url) as client:
        (info,) = client.models()
    assert (info.name, info.version, info.labels, info.device) == (
        "stub",
        7,
        ("cat", "dog"),
        "/CPU:0",
    )


def test_bad_inputs_fail_before_sending() -> None:
    with Client(CLOSED_URL) as client:
        with pytest.raises(TypeError):
            client.predict(123, "x")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.predict_batch([])


def _response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_retry_policy_waits() -> None:
    policy = RetryPolicy(retries=3, backoff=0.5, max_wait=5, jitter=0.0)
    assert policy.after_response(0, _response(200)) is None
    assert policy.after_response(0, _response(429)) is None
    assert policy.after_response(0, _response(503, **{"Retry-After": "2"})) == 2
    assert policy.after_response(0, _response(503, **{"Retry-After": "120"})) == 5  # capped
    assert [policy.after_response(n, _response(503)) for n in range(3)] == [0.5, 1, 2]
    assert policy.after_response(3, _response(503)) is None  # retries spent
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert policy.after_response(0, _response(503, **{"Retry-After": later})) == 5
    assert policy.after_error(1, httpx.ConnectError("refused")) == 1
    with pytest.raises(TransportError):
        policy.after_error(0, httpx.ReadTimeout("slow"))  # the server may still be working


def test_waits_are_spread_and_never_shorter_than_asked() -> None:
    policy = RetryPolicy(retries=3, backoff=0.5, max_wait=5)  # the clients' default jitter
    refused = _response(503, **{"Retry-After": "2"})
    waits = [policy.after_response(0, refused) for _ in range(200)]
    assert all(w is not None and 2 <= w <= 2 * (1 + JITTER) for w in waits)
    assert len(set(waits)) > 100, "clients refused together come back at different times"
    backoffs = [policy.after_error(1, httpx.ConnectError("refused")) for _ in range(200)]
    assert all(1 <= w <= 1 + JITTER for w in backoffs) and len(set(backoffs)) > 100


def test_cli_prints_one_line_errors(
    server: tuple[str, Script], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url, script = server
    script.on("/v1/predict", error(415, "unsupported_media_type", "image format GIF not allowed"))
    image = tmp_path / "x.png"
    image.write_bytes(png())
    assert cli(["predict", "--url", url, "--image", str(image), "--text", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "415 unsupported_media_type: image format GIF not allowed" in err
    argv = ["predict", "--url", CLOSED_URL, "--image", str(image), "--text", "x", "--retries", "0"]
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach" in err and "refused" in err.lower()
    assert cli(["predict", "--url", url, "--image", str(image) + ".missing", "--text", "x"]) == 1
    assert "cannot read image" in capsys.readouterr().err


def test_predict_help_and_client_import_skip_tensorflow() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import service.client\n"
        "from service.main import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    cli(['predict', '--help'])\n"
        "assert '--api-key' in out.getvalue()\n"
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
