"""The client and ``mmserve predict`` against a real ``mmserve serve`` process on the tiny
trained model: every way of passing an image gives the service's own answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from service.client import AsyncClient, Client, Prediction
from tests.support.servers import (
    cli_server_command,
    golden_examples,
    post_predict,
    running_server,
    version_dir,
)

pytestmark = pytest.mark.slow

MMSERVE = Path(sys.executable).parent / "mmserve"


@pytest.fixture(scope="module")
def server_url(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server process for the whole module."""
    with running_server(
        trained_store, tmp_path_factory.mktemp("client_server"), cli_server_command
    ) as (url, _process):
        yield url


@pytest.fixture(scope="module")
def pairs(trained_store: Path) -> list[tuple[Path, str]]:
    """Golden (image file, text) pairs with both modalities present."""
    folder = version_dir(trained_store) / "golden"
    return [(folder / e["image"], e["text"]) for e in golden_examples(trained_store) if e["image"]]


def raw_predict(url: str, file: Path, text: str) -> dict[str, Any]:
    response = post_predict(url, file, text)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_path_bytes_and_pil_image_give_the_service_answer(
    server_url: str, pairs: list[tuple[Path, str]]
) -> None:
    file, text = pairs[0]
    want = raw_predict(server_url, file, text)
    with Client(server_url) as client:
        assert client.health() and client.ready()
        by_path = client.predict(file, text)
        by_str = client.predict(str(file), text)
        by_bytes = client.predict(file.read_bytes(), text)
        with Image.open(file) as image:
            by_pil = client.predict(image.convert("RGB"), text)
        (model,) = client.models()
    assert by_path.to_dict() == want
    assert by_path == by_str == by_bytes
    assert by_pil.probabilities == by_path.probabilities
    assert list(by_path.probabilities) == sorted(
        by_path.probabilities, key=lambda label: -by_path.probabilities[label]
    )
    assert (model.name, model.version) == ("tiny", 1)
    assert sorted(model.labels) == sorted(by_path.probabilities)


def test_batch_keeps_request_order(server_url: str, pairs: list[tuple[Path, str]]) -> None:
    items = pairs[:4]
    assert len(items) >= 2
    with Client(server_url) as client:
        singles = [client.predict(file, text) for file, text in items]
        batch = client.predict_batch(list(reversed(items)), top_k=2)
    for single, from_batch in zip(reversed(singles), batch, strict=True):
        assert from_batch.label == single.label
        assert len(from_batch.probabilities) == 2
        for label, probability in from_batch.probabilities.items():
            assert probability == pytest.approx(single.probabilities[label], abs=1e-5)


def test_async_client_gives_the_same_answers(
    server_url: str, pairs: list[tuple[Path, str]]
) -> None:
    with Client(server_url) as client:
        want = [client.predict(file, text) for file, text in pairs[:3]]

    async def main() -> tuple[list[Prediction], list[Prediction], bool]:
        async with AsyncClient(server_url) as client:
            singles = await asyncio.gather(*(client.predict(f, t) for f, t in pairs[:3]))
            return list(singles), await client.predict_batch(pairs[:3]), await client.ready()

    singles, batch, ready = asyncio.run(main())
    assert ready
    for expected, single, from_batch in zip(want, singles, batch, strict=True):
        assert single.label == from_batch.label == expected.label
        for label, probability in expected.probabilities.items():
            assert single.probabilities[label] == pytest.approx(probability, abs=1e-5)
            assert from_batch.probabilities[label] == pytest.approx(probability, abs=1e-5)


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MMSERVE), "predict", *argv], capture_output=True, text=True, timeout=60
    )


def test_cli_prints_a_table_and_json(server_url: str, pairs: list[tuple[Path, str]]) -> None:
    file, text = pairs[0]
    want = raw_predict(server_url, file, text)
    argv = ["--url", server_url, "--image", str(file), "--text", text]

    table = run_cli(*argv)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0] == f"model tiny, version 1: {want['label']}"
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == [p["label"] for p in want["predictions"]]
    assert [row[1] for row in rows] == [f"{p['probability']:.4f}" for p in want["predictions"]]
    assert rows[0][2] == "#" * round(want["predictions"][0]["probability"] * 30)

    raw = run_cli(*argv, "--json", "--top-k", "2")
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout) == {**want, "predictions": want["predictions"][:2]}

    bad = run_cli("--url", server_url, "--image", str(Path(__file__)), "--text", text)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("mmserve predict: error: the server answered 400")
