"""The model runtime: load a version, place it on a device, run a compiled forward pass.

:class:`Classifier` is the seam the API depends on; :class:`TFClassifier` is the real one
and tests may pass any object with the same shape.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from service.errors import ArtifactError, ConfigurationError
from service.model_store import MODEL_FILE, ModelMetadata, ModelVersion, load_metadata

log = logging.getLogger("mmserve.classifier")


class Classifier(Protocol):
    """What the service needs from a model runtime."""

    name: str
    version: int
    labels: list[str]
    image_size: tuple[int, int]
    device: str
    metadata: ModelMetadata

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [N, C] for float32 images [N, H, W, 3] (0..255) and N texts."""
        ...


def configure_tensorflow(device: str, intra_op: int = 0, inter_op: int = 0) -> str:
    """Set threads and GPU memory growth once per process; return the device to use.

    ``device`` is ``auto``, ``cpu`` or ``gpu``. Must run before TensorFlow initialises its
    devices (the first op), so it is called before a model is loaded.
    """
    import tensorflow as tf

    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.warning("TensorFlow already initialised; thread settings not applied")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                log.warning("TensorFlow already initialised; GPUs stay visible")
        log.info("device: CPU (requested)")
        return "/CPU:0"
    if not gpus:
        if device == "gpu":
            raise ConfigurationError("MMSERVE_DEVICE=gpu but TensorFlow sees no GPU")
        log.info("device: CPU (no GPU visible to TensorFlow)")
        return "/CPU:0"
    for gpu in gpus:
        # Fails only once TensorFlow is initialised, when growth can no longer change.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    log.info("device: GPU %s (%d visible)", gpus[0].name, len(gpus))
    return "/GPU:0"


class TFClassifier:
    """A Keras model from the store behind a compiled, fixed-signature forward pass."""

    def __init__(self, version: ModelVersion, device: str = "/CPU:0") -> None:
        import keras
        import tensorflow as tf

        self.metadata = load_metadata(version.path)
        self.name = version.name
        self.version = version.version
        self.labels = list(self.metadata.labels)
        self.image_size = (int(self.metadata.image_size[0]), int(self.metadata.image_size[1]))
        self.device = device
        h, w = self.image_size
        file = version.path / MODEL_FILE
        if not file.is_file():
            raise ArtifactError(f"{file} is missing")
        try:
            with tf.device(device):
                self._model = keras.saving.load_model(file, compile=False)
        except Exception as exc:
            raise ArtifactError(
                f"{file} is not a loadable Keras model ({type(exc).__name__}); the artifact "
                "is corrupt or was written by an incompatible Keras version"
            ) from exc
        outputs = int(self._model.output_shape[-1])
        if outputs != len(self.labels):
            raise ArtifactError(
                f"{version.path}: the model has {outputs} outputs but metadata lists "
                f"{len(self.labels)} labels"
            )
        model = self._model

        # One signature for every batch size: no retracing as request sizes vary.
        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[
                tf.TensorSpec([None, h, w, 3], tf.float32, name="image"),
                tf.TensorSpec([None, 1], tf.string, name="text"),
            ],
            reduce_retracing=True,
        )
        def forward(image: Any, text: Any) -> Any:
            return model({"image": image, "text": text}, training=False)

        self._forward = forward
        self._tf = tf

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        tf = self._tf
        image_t = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
        text_t = tf.convert_to_tensor(np.asarray(texts, dtype=object).reshape(-1, 1), tf.string)
        with tf.device(self.device):
            out = self._forward(image_t, text_t)
        return np.asarray(out, dtype=np.float32)

    def warm_up(self, batch_sizes: Iterable[int] = (1, 8)) -> None:
        """Run the compiled function once per size so the first request pays no tracing."""
        h, w = self.image_size
        for n in batch_sizes:
            self.predict(np.zeros((n, h, w, 3), np.float32), [""] * n)
