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

    def __init__(
        self, version: ModelVersion, device: str = "/CPU:0", compile_text: bool = False
    ) -> None:
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

        # Called as the one concrete function the signature gives: the tf.function wrapper
        # would bind and look up its arguments on every call, 0.1-0.4 ms of CPU a call
        # (measured on a batch of 1 to 8 on the development machine).
        self._forward = forward.get_concrete_function()
        self._tf = tf
        # Token-row counts (powers of two) whose compiled text encoder is ready: see
        # CompiledText. Only warm_up adds to it, so no request ever waits for a compile.
        self._compiled_rows: set[int] = set()
        self._compiled: CompiledText | None = None
        if compile_text and device.startswith("/CPU"):
            self._compiled = CompiledText.of(model, (h, w))

    def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        tf = self._tf
        image_t = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
        text_t = tf.convert_to_tensor(np.asarray(texts, dtype=object).reshape(-1, 1), tf.string)
        rows = token_rows(len(texts))
        with tf.device(self.device):
            if self._compiled is not None and rows in self._compiled_rows:
                out = self._compiled.forward(image_t, text_t, tf.constant(rows, tf.int32))
            else:
                out = self._forward(image_t, text_t)
        return np.asarray(out, dtype=np.float32)

    @property
    def compiled_batch_sizes(self) -> tuple[int, ...]:
        """One batch size per program compiled for the text encoder (see CompiledText):
        the smallest that runs it, so the one padded most (1, 2, 3, 5, 9, 17 for programs
        of 1, 2, 4, 8, 16, 32 rows); empty when the text encoder is not compiled."""
        return tuple(rows // 2 + 1 for rows in sorted(self._compiled_rows))

    def warm_up(self, batch_sizes: Iterable[int] = (1, 8)) -> None:
        """Run the compiled function once per size so the first request pays no tracing;
        with a compiled text encoder, also compile it for each size's token rows."""
        h, w = self.image_size
        for n in batch_sizes:
            if self._compiled is not None:
                self._compiled_rows.add(token_rows(n))
            self.predict(np.zeros((n, h, w, 3), np.float32), [""] * n)


def token_rows(n: int) -> int:
    """The rows a batch of ``n`` texts is padded to for the compiled text encoder: the
    next power of two, so that a handful of compiled shapes covers every batch size."""
    return 1 << max(0, n - 1).bit_length()


class CompiledText:
    """The model's forward pass with its recurrent text encoder compiled by XLA.

    A recurrent layer runs one step per token position as a loop of small operations;
    at the batch sizes a service sees, that loop's per-step overhead, not the arithmetic,
    is most of its cost on a CPU, and XLA fuses it away. The text strings still go
    through the TextVectorization layer in the ordinary graph (XLA has no string
    operations); only the token ids onward (embedding and recurrent layers) are
    compiled, and the image tower and head run as before. XLA compiles one program per
    input shape, so the token rows are padded to a power of two (padding rows are masked
    and dropped: each row is computed independently) and only the shapes compiled during
    warm-up are used: a larger batch runs the ordinary graph instead of waiting for a
    compile. The golden check replays training's examples through this path.
    """

    def __init__(self, vectorize: Any, encode: Any, rest: Any, image_size: tuple[int, int]):
        import tensorflow as tf

        h, w = image_size
        encode_xla = tf.function(lambda tokens: encode(tokens, training=False), jit_compile=True)

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[
                tf.TensorSpec([None, h, w, 3], tf.float32, name="image"),
                tf.TensorSpec([None, 1], tf.string, name="text"),
                tf.TensorSpec([], tf.int32, name="rows"),
            ],
            reduce_retracing=True,
        )
        def forward(image: Any, text: Any, rows: Any) -> Any:
            tokens = vectorize(text)
            n = tf.shape(tokens)[0]
            features = encode_xla(tf.pad(tokens, [[0, rows - n], [0, 0]]))[:n]
            return rest([image, features], training=False)

        self.forward = forward.get_concrete_function()  # as TFClassifier's

    @classmethod
    def of(cls, model: Any, image_size: tuple[int, int]) -> CompiledText | None:
        """Split ``model`` at its text encoder, or ``None`` (logged) when it has no
        recurrent text encoder of the shape the trainer builds: a sub-model fed by the
        ``text`` input that starts with a TextVectorization layer."""
        import keras

        for layer in model.layers:
            if not isinstance(layer, keras.Model):
                continue
            vectorizers = [
                inner for inner in layer.layers if isinstance(inner, keras.layers.TextVectorization)
            ]
            recurrent = any(
                isinstance(inner, (keras.layers.RNN, keras.layers.Bidirectional))
                for inner in layer.layers
            )
            if len(vectorizers) != 1 or not recurrent:
                continue
            try:
                (node,) = layer._inbound_nodes  # where the outer graph calls the encoder
                (text_input,) = node.input_tensors
                (features,) = node.output_tensors
                others = [x for x in model.inputs if x is not text_input]
                if len(others) != 1 or len(model.inputs) != 2:
                    raise ValueError("expected the inputs image and text, the text encoder's")
                encode = keras.Model(vectorizers[0].output, layer.output)
                rest = keras.Model([*others, features], model.output)
            except (ValueError, TypeError, AttributeError) as exc:
                log.info("text encoder left uncompiled: cannot split the model (%s)", exc)
                return None
            return cls(vectorizers[0], encode, rest, image_size)
        log.info("text encoder left uncompiled: the model has no recurrent text encoder")
        return None
