"""Optional modalities and ``explain=modality`` on the tiny really trained model, served in
process: every route's one-modality answer, and every explanation, equals ``model.keras``
called in process with the trained blank."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.client import AsyncClient, Client, Prediction
from service.preprocessing import BLANK_TEXT, blank_image, preprocess_image
from service.serving.app import create_app
from service.serving.settings import Settings
from tests.conftest import TINY_IMAGE_SIZE
from tests.support.fakes import default_runtime
from tests.support.live import free_port, serving
from tests.support.servers import golden_examples, golden_with_image_and_text, version_dir

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5
"""The acceptance's tolerance: the served path against Keras in process."""


@dataclass(frozen=True)
class Served:
    url: str
    app: Any
    labels: list[str]
    file: Path
    text: str
    want: dict[str, np.ndarray]
    """Keras in process: ``full``, ``image_only`` (blank text), ``text_only`` (blank image)."""


@pytest.fixture(scope="module")
def served(trained_store: Path) -> Iterator[Served]:
    import keras
    import tensorflow as tf

    file, text = golden_with_image_and_text(trained_store)
    model = keras.saving.load_model(version_dir(trained_store) / "model.keras", compile=False)
    pixels = preprocess_image(file.read_bytes(), TINY_IMAGE_SIZE)
    blank = blank_image(TINY_IMAGE_SIZE)

    def keras_call(image: np.ndarray, words: str) -> np.ndarray:
        inputs = {"image": tf.constant(image[None]), "text": tf.constant([[words]])}
        return np.asarray(model(inputs))[0]

    want = {
        "full": keras_call(pixels, text),
        "image_only": keras_call(pixels, BLANK_TEXT),
        "text_only": keras_call(blank, text),
    }
    settings = Settings(model_store=trained_store, model_name="tiny", port=free_port())
    app = create_app(settings)
    with serving(app, settings) as port:
        url = f"http://127.0.0.1:{port}"
        labels = httpx.get(f"{url}/v1/models/tiny").json()["labels"]
        yield Served(url, app, labels, file, text, want)


def vector(body: dict[str, Any], labels: list[str]) -> np.ndarray:
    """A v1 result's probabilities in label order."""
    got = {p["label"]: p["probability"] for p in body["predictions"]}
    return np.array([got[label] for label in labels])


def client_vector(prediction: Prediction, labels: list[str]) -> np.ndarray:
    return np.array([prediction.probabilities[label] for label in labels])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2_infer(url: str, inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/v2/models/tiny/infer", json={"inputs": inputs, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def v2_outputs(body: dict[str, Any]) -> dict[str, np.ndarray]:
    return {o["name"]: np.reshape(o["data"], o["shape"]) for o in body["outputs"]}


def test_one_modality_matches_keras_on_every_route(served: Served) -> None:
    url, labels, data, text = served.url, served.labels, served.file.read_bytes(), served.text
    image_part = {"image": ("x.png", data)}
    got: dict[str, list[tuple[str, np.ndarray]]] = {"image_only": [], "text_only": []}

    def v1(path: str, modality: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.post(f"{url}{path}", **kwargs)
        assert response.status_code == 200, (path, response.text)
        body: dict[str, Any] = response.json()
        results = body.get("results", [body])
        assert [r["modalities"] for r in results] == [modality] * len(results)
        return body

    image = v1("/v1/predict", "image", files=image_part)
    got["image_only"].append(("v1 predict", vector(image, labels)))
    empty_text = v1("/v1/predict", "image", files=image_part, data={"text": ""})
    got["image_only"].append(("v1 predict, empty text", vector(empty_text, labels)))
    words = v1("/v1/predict", "text", files={"text": (None, text)})
    got["text_only"].append(("v1 predict", vector(words, labels)))
    pinned = v1("/v1/models/tiny/versions/1/predict", "text", files={"text": (None, text)})
    got["text_only"].append(("v1 version predict", vector(pinned, labels)))

    images = v1("/v1/predict/batch", "image", files=[("image", ("a.png", data))] * 2)
    for result in images["results"]:
        got["image_only"].append(("v1 multipart batch", vector(result, labels)))
    texts = v1("/v1/predict/batch", "text", files=[("text", (None, text))] * 2)
    for result in texts["results"]:
        got["text_only"].append(("v1 multipart batch", vector(result, labels)))

    instances = [{"image": {"b64": b64(data)}}, {"text": text}, {"image": None, "text": text}]
    mixed = httpx.post(f"{url}/v1/predict/batch", json={"instances": instances}).json()
    assert [r["modalities"] for r in mixed["results"]] == ["image", "text", "text"]
    got["image_only"].append(("v1 JSON batch", vector(mixed["results"][0], labels)))
    for result in mixed["results"][1:]:
        got["text_only"].append(("v1 JSON batch", vector(result, labels)))

    only_image = v2_infer(url, [{"name": "image", "shape": [1], "datatype": "BYTES",
                                 "data": [b64(data)]}])  # fmt: skip
    assert only_image["parameters"]["modalities"] == "image"
    got["image_only"].append(("v2 infer", v2_outputs(only_image)["probabilities"][0]))
    only_text = v2_infer(url, [{"name": "text", "shape": [1], "datatype": "BYTES",
                                "data": [text]}])  # fmt: skip
    assert only_text["parameters"]["modalities"] == "text"
    got["text_only"].append(("v2 infer", v2_outputs(only_text)["probabilities"][0]))

    with Client(url) as client:
        got["image_only"].append(("client", client_vector(client.predict(data), labels)))
        got["text_only"].append(("client", client_vector(client.predict(text=text), labels)))
        batch = client.predict_batch([(data, None), (None, text)])
        got["image_only"].append(("client batch", client_vector(batch[0], labels)))
        got["text_only"].append(("client batch", client_vector(batch[1], labels)))

    async def async_client() -> list[Prediction]:
        async with AsyncClient(url) as client:
            return [await client.predict(data), await client.predict(None, text)]

    image_async, text_async = asyncio.run(async_client())
    assert (image_async.modalities, text_async.modalities) == ("image", "text")
    got["image_only"].append(("async client", client_vector(image_async, labels)))
    got["text_only"].append(("async client", client_vector(text_async, labels)))

    for variant, answers in got.items():
        for route, probabilities in answers:
            np.testing.assert_allclose(
                probabilities, served.want[variant], atol=TOLERANCE, err_msg=f"{variant} {route}"
            )


def check_explanation(explanation: dict[str, Any], served: Served) -> None:
    """Three vectors as Keras in process, and the summary that follows from them."""
    labels, want = served.labels, served.want
    for variant in ("full", "image_only", "text_only"):
        got = vector(explanation[variant], labels)
        np.testing.assert_allclose(got, want[variant], atol=TOLERANCE, err_msg=variant)
    top = int(np.argmax(want["full"]))
    for removed, variant in (("without_image", "text_only"), ("without_text", "image_only")):
        summary = explanation[removed]
        assert summary["label"] == labels[int(np.argmax(want[variant]))]
        change = want[variant][top] - want["full"][top]
        assert summary["probability_change"] == pytest.approx(change, abs=TOLERANCE)
        assert summary["top_class_changes"] == (int(np.argmax(want[variant])) != top)


def test_explain_equals_three_in_process_calls_in_one_batch(served: Served) -> None:
    url, data, text = served.url, served.file.read_bytes(), served.text
    batcher = default_runtime(served.app).batcher
    calls = batcher.stats.batches
    response = httpx.post(
        f"{url}/v1/predict?explain=modality",
        files={"image": ("x.png", data)},
        data={"text": text, "top_k": "1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (batcher.stats.batches, batcher.stats.sizes[-1]) == (calls + 1, 3)
    assert len(body["predictions"]) == 1  # top_k cuts the answer, not the explanation
    check_explanation(body["explanation"], served)
    np.testing.assert_allclose(
        vector(body["explanation"]["full"], served.labels)[np.argmax(served.want["full"])],
        body["predictions"][0]["probability"],
        atol=TOLERANCE,
    )

    instances = [{"image": {"b64": b64(data)}, "text": text}] * 2
    batch = httpx.post(
        f"{url}/v1/models/tiny/predict/batch",
        params={"explain": "modality"},
        json={"instances": instances},
    ).json()
    assert batcher.stats.sizes[-1] == 6  # two items, three times each, one model call
    for result in batch["results"]:
        check_explanation(result["explanation"], served)

    inputs = [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(data)]},
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]},
    ]
    v2 = v2_outputs(v2_infer(url, inputs, parameters={"explain": "modality"}))
    for name, variant in (
        ("probabilities", "full"),
        ("probabilities_image_only", "image_only"),
        ("probabilities_text_only", "text_only"),
    ):
        np.testing.assert_allclose(v2[name][0], served.want[variant], atol=TOLERANCE)
    top = int(np.argmax(served.want["full"]))
    change = served.want["text_only"][top] - served.want["full"][top]
    assert v2["probability_change_without_image"][0] == pytest.approx(change, abs=TOLERANCE)
    assert v2["top_class_changes_without_image"].dtype == bool

    with Client(url) as client:
        explained = client.predict(data, text, explain="modality")
    assert explained.explanation is not None
    check_explanation(dict(explained.explanation.raw), served)
    np.testing.assert_allclose(
        [explained.explanation.text_only[label] for label in served.labels],
        served.want["text_only"],
        atol=TOLERANCE,
    )


def test_model_without_dropout_warns_and_counts(served: Served, trained_store: Path) -> None:
    url = served.url
    metadata = json.loads((version_dir(trained_store) / "metadata.json").read_text())
    section = httpx.get(f"{url}/v1/models/tiny").json()["modalities"]
    ablation = metadata["metrics"]["ablation"]
    assert section == {
        "trained_with_modality_dropout": False,  # the session's model: no modality dropout
        "modality_dropout": metadata["training"]["modality_dropout"],
        "accuracy": metadata["metrics"]["test"]["accuracy"],
        "image_only_accuracy": ablation["image_only"]["accuracy"],
        "text_only_accuracy": ablation["text_only"]["accuracy"],
        "blanks": {"image": "all zeros", "text": BLANK_TEXT},
    }
    v2 = httpx.get(f"{url}/v2/models/tiny").json()["parameters"]
    assert v2["text_only_accuracy"] == ablation["text_only"]["accuracy"]
    assert v2["trained_with_modality_dropout"] is False

    def counted() -> float:
        text = httpx.get(f"{url}/metrics").text
        line = 'mmserve_single_modality_without_dropout_total{model="tiny",version="1"}'
        values = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
        return values[0] if values else 0.0

    before = counted()
    both = httpx.post(
        f"{url}/v1/predict",
        files={"image": ("x.png", served.file.read_bytes())},
        data={"text": served.text},
    ).json()
    assert both["warnings"] == [] and counted() == before
    alone = httpx.post(f"{url}/v1/predict", files={"text": (None, served.text)}).json()
    assert len(alone["warnings"]) == 1 and "without modality dropout" in alone["warnings"][0]
    assert f"{ablation['text_only']['accuracy']:.3f}" in alone["warnings"][0]
    assert counted() == before + 1
    # The golden set holds an image-only and a text-only example: the server started, so the
    # start-up check reproduced both blanks.
    golden = golden_examples(trained_store)
    assert any(e["image"] is None for e in golden) and any(e["text"] == "" for e in golden)
