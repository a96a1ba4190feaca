"""A deterministic fake classifier and helpers for the API tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from starlette.applications import Starlette

from service.model_store import ModelMetadata, ModelVersion
from service.preprocessing import preprocess_image
from service.serving.api.state import app_state
from service.serving.app import create_app
from service.serving.inference.classifier import Classifier
from service.serving.inference.runtime import Runtime
from service.serving.settings import Settings

LABELS = ["red", "green", "blue"]
SIZE = (8, 8)
RED, GREEN, BLUE, GREY = (230, 20, 20), (20, 230, 20), (20, 20, 230), (128, 128, 128)


def fake_probabilities(images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """Softmax of each channel's mean brightness, plus 2 for a label named in the text."""
    logits = 4.0 * images.astype(np.float64).mean(axis=(1, 2)) / 255.0
    for row, text in enumerate(texts):
        for col, label in enumerate(LABELS):
            if label in text.lower():
                logits[row, col] += 2.0
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


class FakeClassifier:
    """Implements the Classifier protocol without TensorFlow; records batch sizes."""

    def __init__(self) -> None:
        self.name = "fake"
        self.version = 3
        self.labels = list(LABELS)
        self.image_size = SIZE
        self.device = "/CPU:0"
        self.metadata = ModelMetadata(
            name="fake",
            version=3,
            labels=LABELS,
            image_size=SIZE,
            metrics={"test": {"accuracy": 0.9, "f1_macro": 0.88}},
            framework={"tensorflow": "none"},
            created_at="2024-05-01T12:00:00+00:00",
        )
        self.calls: list[int] = []

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        if "boom" in texts:
            raise RuntimeError("the fake model exploded")
        assert images.shape[1:] == (*SIZE, 3) and images.dtype == np.float32
        self.calls.append(len(images))
        return fake_probabilities(images, texts)


def image_bytes(
    color: tuple[int, int, int] = RED, size: tuple[int, int] = (20, 12), fmt: str = "PNG"
) -> bytes:
    """An encoded single-colour image, ``size`` as (width, height)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def expected(data: bytes, text: str) -> list[float]:
    """The fake's probabilities for the file as the service preprocesses it."""
    pixels = preprocess_image(data, SIZE)[None]
    return [float(p) for p in fake_probabilities(pixels, [text])[0]]


def assert_serves(client: TestClient) -> None:
    """A valid request still succeeds."""
    response = client.post(
        "/v1/predict", files={"image": ("ok.png", image_bytes(GREEN))}, data={"text": "ok"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "green"


def default_runtime(app: Starlette) -> Runtime:
    """The runtime a running app's ``/v1/predict`` requests get."""
    registry = app_state(app).registry
    assert registry is not None, "the app is not running"
    return registry.default().primary()


class Named(FakeClassifier):
    """The fake classifier as version ``version`` of model ``name``."""

    def __init__(self, name: str, version: int) -> None:
        super().__init__()
        self.name = name
        self.version = version
        self.metadata = self.metadata.model_copy(update={"name": name, "version": version})


def fake_loader(version: ModelVersion) -> Classifier:
    """A loader for the registry that "loads" a fake for any version of the store."""
    return Named(version.name, version.version)


def fake_store(root: Path) -> Path:
    """Empty version folders: ``fake`` 1 and 2, ``other`` 1, ``spare`` 4 (for fake_loader)."""
    for name, versions in {"fake": [1, 2], "other": [1], "spare": [4]}.items():
        for v in versions:
            (root / name / str(v)).mkdir(parents=True)
    return root


def multi_model_app(store: Path, **settings: Any) -> FastAPI:
    """An app serving fakes of ``fake`` 1 and 2 (policy ``latest:2``) and ``other`` 1 from
    :func:`fake_store`'s ``store``, loading more through :func:`fake_loader`."""
    configured = Settings(
        model_store=store,
        model_name="fake",
        version_policy="fake=latest:2",
        decode_threads=1,
        reload_poll_s=0,
        **settings,
    )
    given = [Named("fake", 1), Named("fake", 2), Named("other", 1)]
    return create_app(configured, classifiers=given, loader=fake_loader)
