"""Config-driven factories for the fused image+text classifier.

``build_model`` = image encoder + text encoder -> fusion -> Dense(256, relu) -> dropout ->
softmax. Inputs are named ``image`` (float32 [N,H,W,3], raw 0..255: rescaling is in the
graph) and ``text`` (string [N,1]: tokenisation is in the graph), output ``probabilities``.
Only standard Keras layers are used, so ``model.keras`` loads without this package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from service.training.options import BACKBONES, FUSIONS, TEXT_ENCODERS

# ImageNet channel means for VGG16's "caffe" preprocessing (BGR order).
_VGG_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the network; stored in the artifact's metadata."""

    image_size: tuple[int, int] = (64, 64)
    backbone: str = "small_cnn"
    image_weights: str = "none"  # none | imagenet | path to a weights file
    text_encoder: str = "lstm"
    vocab_size: int = 20000
    sequence_length: int = 32
    embedding_dim: int = 64
    text_units: int = 64
    fusion: str = "concat"
    fusion_dim: int = 64
    hidden_units: int = 256
    dropout: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_image_encoder(config: ModelConfig) -> keras.Model:
    """Image features from raw 0..255 pixels; each backbone carries its own rescaling."""
    h, w = config.image_size
    inputs = keras.Input((h, w, 3), name="pixels")
    if config.backbone == "small_cnn":
        x = layers.Rescaling(1.0 / 255)(inputs)
        # A strided stem halves the resolution at once: most of the cost of a small CNN is
        # in its full-resolution layers.
        x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
        for filters in (32, 64, 128):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D()(x)
        # Average pooling says how much of each feature there is, max pooling whether it is
        # there at all: a small object's colour survives the latter.
        features = layers.Concatenate()(
            [layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)]
        )
        return keras.Model(inputs, features, name="image_encoder")
    weights = config.image_weights
    keras_weights = "imagenet" if weights == "imagenet" else None
    apps = keras.applications
    if config.backbone == "mobilenet_v3_small":
        # include_preprocessing rescales 0..255 inside the model.
        base = apps.MobileNetV3Small(
            input_shape=(h, w, 3),
            include_top=False,
            weights=keras_weights,
            pooling="avg",
            include_preprocessing=True,
        )
        x = inputs
    elif config.backbone == "efficientnet_b0":
        # EfficientNet normalises 0..255 inputs inside the model.
        base = apps.EfficientNetB0(
            input_shape=(h, w, 3), include_top=False, weights=keras_weights, pooling="avg"
        )
        x = inputs
    elif config.backbone == "vgg16":
        base = apps.VGG16(
            input_shape=(h, w, 3), include_top=False, weights=keras_weights, pooling="avg"
        )
        x = _caffe_preprocess(inputs)
    else:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose from {BACKBONES}")
    if weights not in ("none", "imagenet"):
        if not Path(weights).is_file():
            raise ValueError(f"image weights file not found: {weights}")
        base.load_weights(weights)
    return keras.Model(inputs, base(x), name="image_encoder")


def _caffe_preprocess(x: Any) -> Any:
    """RGB 0..255 -> BGR minus the ImageNet means, as a frozen 1x1 convolution."""
    conv = layers.Conv2D(3, 1, trainable=False, name="caffe_preprocess")
    out = conv(x)
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for out_channel, in_channel in enumerate((2, 1, 0)):
        kernel[0, 0, in_channel, out_channel] = 1.0
    conv.set_weights([kernel, -np.array(_VGG_MEAN_BGR, dtype=np.float32)])
    return out


def build_text_encoder(config: ModelConfig, texts: np.ndarray) -> keras.Model:
    """Text features from raw strings; the vocabulary is adapted on ``texts`` (training)."""
    inputs = keras.Input((1,), dtype="string", name="raw_text")
    vectorize = layers.TextVectorization(
        max_tokens=config.vocab_size,
        output_sequence_length=config.sequence_length,
        standardize="lower_and_strip_punctuation",
        name="vectorize",
    )
    vectorize.adapt(np.asarray(texts, dtype=object).reshape(-1, 1))
    vocab = len(vectorize.get_vocabulary())
    x = vectorize(inputs)
    x = layers.Embedding(vocab, config.embedding_dim, mask_zero=True, name="embedding")(x)
    if config.text_encoder == "lstm":
        x = layers.LSTM(config.text_units)(x)
    elif config.text_encoder == "bilstm":
        x = layers.Bidirectional(layers.LSTM(config.text_units))(x)
    elif config.text_encoder == "gru":
        x = layers.GRU(config.text_units)(x)
    else:
        raise ValueError(
            f"unknown text encoder {config.text_encoder!r}; choose from {TEXT_ENCODERS}"
        )
    return keras.Model(inputs, x, name="text_encoder")


def fuse(config: ModelConfig, image_features: Any, text_features: Any) -> Any:
    """Combine the two feature vectors: concat, element-wise product or bilinear."""
    if config.fusion == "concat":
        return layers.Concatenate(name="fusion")([image_features, text_features])
    d = config.fusion_dim
    img = layers.Dense(d, activation="tanh", name="image_projection")(image_features)
    txt = layers.Dense(d, activation="tanh", name="text_projection")(text_features)
    if config.fusion == "multiply":
        return layers.Multiply(name="fusion")([img, txt])
    if config.fusion == "bilinear":
        # Outer product of the two projections: [N,d,1] x [N,1,d] -> [N,d,d].
        outer = layers.Dot(axes=(2, 1), name="fusion")(
            [layers.Reshape((d, 1))(img), layers.Reshape((1, d))(txt)]
        )
        return layers.Flatten()(outer)
    raise ValueError(f"unknown fusion {config.fusion!r}; choose from {FUSIONS}")


def build_model(config: ModelConfig, num_classes: int, texts: np.ndarray) -> keras.Model:
    """The full classifier with named inputs ``image``/``text`` and softmax output."""
    h, w = config.image_size
    image = keras.Input((h, w, 3), dtype="float32", name="image")
    text = keras.Input((1,), dtype="string", name="text")
    fused = fuse(
        config, build_image_encoder(config)(image), build_text_encoder(config, texts)(text)
    )
    x = layers.Dense(config.hidden_units, activation="relu", name="hidden")(fused)
    x = layers.Dropout(config.dropout)(x)
    out = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model({"image": image, "text": text}, out, name="mmserve_classifier")
