"""The model as every peer runs it: the artifact's ``model.keras`` behind a compiled
forward pass with one signature for every batch size (as the service runs it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from service.preprocessing import preprocess_image

MODEL_ENV = "BENCH_PEER_MODEL"


def image_size(folder: Path | None = None) -> tuple[int, int]:
    """The model's input (height, width), from the artifact's ``metadata.json``."""
    folder = folder or Path(os.environ[MODEL_ENV])
    size = json.loads((folder / "metadata.json").read_text())["image_size"]
    return int(size[0]), int(size[1])


def decode(image: bytes, size: tuple[int, int]) -> np.ndarray:
    """The service's own bytes -> float32 [H, W, 3] path (no TensorFlow needed)."""
    return preprocess_image(image, size)


class FusedModel:
    """Load ``<version folder>/model.keras`` and its labels and image size."""

    def __init__(self, folder: Path | None = None) -> None:
        import keras
        import tensorflow as tf

        folder = folder or Path(os.environ[MODEL_ENV])
        metadata = json.loads((folder / "metadata.json").read_text())
        self.labels: list[str] = list(metadata["labels"])
        h, w = (int(metadata["image_size"][0]), int(metadata["image_size"][1]))
        self.size = (h, w)
        model = keras.saving.load_model(folder / "model.keras", compile=False)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, h, w, 3], tf.float32),
                tf.TensorSpec([None, 1], tf.string),
            ],
            reduce_retracing=True,
        )
        def forward(image: Any, text: Any) -> Any:
            return model({"image": image, "text": text}, training=False)

        self._forward = forward.get_concrete_function()  # called as the service calls it
        self._tf = tf
        for n in (1, 8, 32):
            self.predict(np.zeros((n, h, w, 3), np.float32), [""] * n)

    def predict(self, images: np.ndarray, texts: list[str]) -> np.ndarray:
        """Probabilities [N, C]."""
        tf = self._tf
        text = tf.convert_to_tensor(np.asarray(texts, dtype=object).reshape(-1, 1), tf.string)
        return np.asarray(self._forward(tf.convert_to_tensor(images), text), dtype=np.float32)

    def answer(self, row: np.ndarray) -> dict[str, Any]:
        """One item's answer, shaped like the service's: top label and every probability."""
        return {
            "label": self.labels[int(np.argmax(row))],
            "probabilities": dict(zip(self.labels, row.tolist(), strict=True)),
        }
