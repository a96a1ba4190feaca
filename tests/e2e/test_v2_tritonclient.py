"""The official Triton client against a live ``mmserve serve`` on a really trained model:
the Open Inference Protocol answers what the native API answers."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.servers import (
    cli_server_command,
    golden_examples,
    post_predict,
    running_server,
    version_dir,
)

httpclient = pytest.importorskip("tritonclient.http")

pytestmark = pytest.mark.slow


def native_probabilities(url: str, files: list[Path], texts: list[str]) -> np.ndarray:
    """What ``/v1/predict`` answers for each file and text, in label order."""
    labels = httpx.get(f"{url}/v1/models/tiny", timeout=30).json()["labels"]
    rows = []
    for file, text in zip(files, texts, strict=True):
        response = post_predict(url, file, text)
        assert response.status_code == 200, response.text
        got = {p["label"]: p["probability"] for p in response.json()["predictions"]}
        rows.append([got[label] for label in labels])
    return np.array(rows)


def test_tritonclient_matches_the_native_api(trained_store: Path, tmp_path: Path) -> None:
    examples = [e for e in golden_examples(trained_store) if e["image"]][:4]
    files = [version_dir(trained_store) / "golden" / e["image"] for e in examples]
    texts = [e["text"] for e in examples]
    with running_server(trained_store, tmp_path, cli_server_command) as (url, _process):
        want = native_probabilities(url, files, texts)

        # What the README shows.
        client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tiny")
        metadata = client.get_model_metadata("tiny")
        assert metadata["versions"] == ["1"]
        assert [i["name"] for i in metadata["inputs"]] == ["image", "text"]

        image = httpclient.InferInput("image", [len(files)], "BYTES")
        image.set_data_from_numpy(
            np.array([f.read_bytes() for f in files], dtype=np.object_), binary_data=True
        )
        text = httpclient.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(
            np.array([t.encode() for t in texts], dtype=np.object_), binary_data=True
        )
        for binary in (True, False):
            result = client.infer(
                "tiny",
                [image, text],
                outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary)],
            )
            np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)

        top = client.infer(
            "tiny",
            [image, text],
            outputs=[httpclient.InferRequestedOutput("probabilities", class_count=2)],
        ).as_numpy("probabilities")
        assert top.shape == (len(files), 2)
        for row, probabilities in zip(top, want, strict=True):
            score, index, _label = row[0].decode().split(":")
            assert int(index) == int(np.argmax(probabilities))
            assert float(score) == pytest.approx(probabilities.max(), abs=1e-6)

        with pytest.raises(httpclient.InferenceServerException) as refused:
            client.get_model_metadata("tiny", model_version="2")
        assert refused.value.status() == "404"
        client.close()
