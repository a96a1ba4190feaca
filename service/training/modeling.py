"""Config-driven factories for the fused image+text classifier.

``build_model`` = image encoder + text encoder -> fusion -> Dense(256, relu) -> dropout ->
softmax. Inputs are named ``image`` (float32 [N,H,W,3], raw 0..255: each backbone's own
preprocessing is in the graph) and ``text`` (string [N,1]: tokenisation is in the graph),
output ``probabilities``. Only standard Keras layers are used, so ``model.keras`` loads
without this package.

Pretrained backbones keep every BatchNormalization layer frozen, in the freeze phase and
the fine-tune phase alike: a frozen BatchNormalization layer runs in inference mode. (In
Keras 3 a ``training=False`` given when the functional graph is built is overridden by
``fit``, so freezing the layer is the only switch that holds.)
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from service.training.options import (
    BACKBONES,
    DEFAULT_TEXT_ENCODER,
    FINE_TUNE_LAYERS,
    FUSIONS,
    SEQUENCE_ENCODERS,
    TEXT_ENCODERS,
    check_combination,
)

# ImageNet channel means for VGG16's "caffe" preprocessing (BGR order).
_VGG_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the network; stored in the artifact's metadata."""

    image_size: tuple[int, int] = (64, 64)
    backbone: str = "small_cnn"
    image_weights: str = "none"  # none | imagenet | path to a weights file
    freeze_backbone: bool = False  # train the head only; pretrained backbones only
    text_encoder: str = DEFAULT_TEXT_ENCODER
    vocab_size: int = 20000
    sequence_length: int = 32
    embedding_dim: int = 64
    text_units: int = 64
    char_ngrams: int = 4  # ngrams encoder: character n-grams of 2..N (0: none)
    word_ngrams: int = 2  # ngrams encoder: word n-grams of 1..N (0: none)
    ngram_weighting: str = "count"  # count | tf_idf (count measured better: README)
    fusion: str = "concat"
    fusion_dim: int = 64
    hidden_units: int = 256
    dropout: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_image_encoder(config: ModelConfig) -> keras.Model:
    """Image features from raw 0..255 pixels; each backbone carries its own preprocessing."""
    check_combination(
        backbone=config.backbone,
        image_weights=config.image_weights,
        freeze_backbone=config.freeze_backbone,
        text_encoder=config.text_encoder,
    )
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
    base = _application(config)
    if config.image_weights != "none":
        for layer in _batch_norms(base):
            layer.trainable = False
    if config.freeze_backbone:
        base.trainable = False
    preprocess = _caffe_preprocess if config.backbone == "vgg16" else _identity
    # training=False documents the intent; the frozen BatchNormalization layers enforce it.
    features = base(preprocess(inputs), training=False)
    return keras.Model(inputs, features, name="image_encoder")


def _application(config: ModelConfig) -> keras.Model:
    """The keras.applications backbone (no top, average pooled), with its weights loaded."""
    h, w = config.image_size
    weights = config.image_weights
    keras_weights = "imagenet" if weights == "imagenet" else None
    apps = keras.applications
    common: dict[str, Any] = {
        "input_shape": (h, w, 3),
        "include_top": False,
        "weights": keras_weights,
        "pooling": "avg",
    }
    if config.backbone == "mobilenet_v3_small":
        # include_preprocessing rescales 0..255 to -1..1 inside the model.
        base = apps.MobileNetV3Small(**common, include_preprocessing=True)
    elif config.backbone == "efficientnet_b0":
        # EfficientNet rescales and normalises 0..255 inputs inside the model.
        base = apps.EfficientNetB0(**common)
    elif config.backbone == "vgg16":
        # VGG16 expects "caffe" inputs: BGR minus the ImageNet means (added by the caller).
        base = apps.VGG16(**common)
    else:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose from {BACKBONES}")
    if weights not in ("none", "imagenet"):
        if not Path(weights).is_file():
            raise ValueError(f"image weights file not found: {weights}")
        base.load_weights(weights)
    return base


def _batch_norms(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]


def _identity(x: Any) -> Any:
    return x


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The keras.applications backbone inside a built classifier (None for small_cnn)."""
    encoder = model.get_layer("image_encoder")
    inner = [layer for layer in encoder.layers if isinstance(layer, keras.Model)]
    return inner[0] if inner else None


def unfreeze_top(model: keras.Model, backbone: str, count: int | None = None) -> list[str]:
    """Make the top ``count`` weighted layers of the backbone trainable, BatchNorm excepted.

    Returns the names of the layers unfrozen. Recompile the model afterwards.
    """
    base = backbone_of(model)
    if base is None:
        raise ValueError(f"{backbone} has no pretrained backbone to fine-tune")
    n = FINE_TUNE_LAYERS[backbone] if count is None else count
    weighted = [
        layer
        for layer in base.layers
        if layer.weights
        and not isinstance(layer, layers.BatchNormalization)
        and not isinstance(layer, keras.Model)
    ]
    chosen = weighted[-n:]
    # Keras only honours a layer's trainable flag when every model above it is trainable.
    base.trainable = True
    for layer in base.layers:
        layer.trainable = False
    for layer in chosen:
        layer.trainable = True
    return [layer.name for layer in chosen]


def _caffe_preprocess(x: Any) -> Any:
    """RGB 0..255 -> BGR minus the ImageNet means, as a frozen 1x1 convolution."""
    conv = layers.Conv2D(3, 1, trainable=False, name="caffe_preprocess")
    out = conv(x)
    kernel = np.zeros((1, 1, 3, 3), dtype=np.float32)
    for out_channel, in_channel in enumerate((2, 1, 0)):
        kernel[0, 0, in_channel, out_channel] = 1.0
    conv.set_weights([kernel, -np.array(_VGG_MEAN_BGR, dtype=np.float32)])
    return out


def adapt_vectorizers(config: ModelConfig, texts: np.ndarray) -> list[layers.TextVectorization]:
    """The text encoder's TextVectorization layers, adapted on ``texts`` (training).

    Adapting cannot run inside a distribution strategy's scope (its string tables cannot
    be mirrored), so it happens first; the trainable layers are built afterwards.
    """
    corpus = np.asarray(texts, dtype=object).reshape(-1, 1)
    if config.text_encoder not in TEXT_ENCODERS:
        raise ValueError(
            f"unknown text encoder {config.text_encoder!r}; choose from {TEXT_ENCODERS}"
        )
    if config.text_encoder in SEQUENCE_ENCODERS:
        specs: list[dict[str, Any]] = [
            {"output_sequence_length": config.sequence_length, "name": "vectorize"}
        ]
    else:
        specs = [
            {
                "split": kind,
                "ngrams": tuple(range(2 if kind == "character" and top >= 2 else 1, top + 1)),
                "output_mode": config.ngram_weighting,
                "name": f"{'char' if kind == 'character' else 'word'}_ngrams",
            }
            for kind, top in (
                ("character", config.char_ngrams),
                ("whitespace", config.word_ngrams),
            )
            if top > 0
        ]
        if not specs:
            raise ValueError("the ngrams text encoder needs char_ngrams or word_ngrams > 0")
    out = []
    for spec in specs:
        vectorize = layers.TextVectorization(
            max_tokens=config.vocab_size, standardize="lower_and_strip_punctuation", **spec
        )
        vectorize.adapt(corpus)
        out.append(vectorize)
    return out


def build_text_encoder(
    config: ModelConfig, vectorizers: list[layers.TextVectorization]
) -> keras.Model:
    """Text features from raw strings, through the adapted ``vectorizers``."""
    inputs = keras.Input((1,), dtype="string", name="raw_text")
    if config.text_encoder == "ngrams":
        features = _ngram_features(config, inputs, vectorizers)
        return keras.Model(inputs, features, name="text_encoder")
    (vectorize,) = vectorizers
    vocab = len(vectorize.get_vocabulary())
    x = vectorize(inputs)
    x = layers.Embedding(vocab, config.embedding_dim, mask_zero=True, name="embedding")(x)
    if config.text_encoder == "lstm":
        x = layers.LSTM(config.text_units, name="lstm")(x)
    elif config.text_encoder == "bilstm":
        x = layers.Bidirectional(layers.LSTM(config.text_units), name="bilstm")(x)
    else:
        x = layers.GRU(config.text_units, name="gru")(x)
    return keras.Model(inputs, x, name="text_encoder")


def _ngram_features(
    config: ModelConfig, inputs: Any, vectorizers: list[layers.TextVectorization]
) -> Any:
    """Bag of character and/or word n-grams (TF-IDF or counts), then one dense layer.

    Character n-grams see inside words never met in training (compound words, codes,
    file names), which a word vocabulary maps to one out-of-vocabulary token.
    """
    # Flatten: the bag of a [N, 1] string input is declared [N, 1, V].
    bags = [layers.Flatten()(vectorize(inputs)) for vectorize in vectorizers]
    x = bags[0] if len(bags) == 1 else layers.Concatenate(name="ngram_bag")(bags)
    return layers.Dense(config.text_units, activation="relu", name="ngram_dense")(x)


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


def build_model(
    config: ModelConfig,
    num_classes: int,
    texts: np.ndarray,
    scope: AbstractContextManager[Any] | None = None,
) -> keras.Model:
    """The full classifier with named inputs ``image``/``text`` and softmax output.

    ``scope`` (a distribution strategy's) is entered after the text vocabularies are
    adapted on ``texts``, for every layer with weights.
    """
    vectorizers = adapt_vectorizers(config, texts)
    with scope or contextlib.nullcontext():
        h, w = config.image_size
        image = keras.Input((h, w, 3), dtype="float32", name="image")
        text = keras.Input((1,), dtype="string", name="text")
        fused = fuse(
            config,
            build_image_encoder(config)(image),
            build_text_encoder(config, vectorizers)(text),
        )
        x = layers.Dense(config.hidden_units, activation="relu", name="hidden")(fused)
        x = layers.Dropout(config.dropout)(x)
        out = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        return keras.Model({"image": image, "text": text}, out, name="mmserve_classifier")
