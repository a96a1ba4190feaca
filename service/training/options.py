"""The model builder's choices and the rules that combine them.

Importable without TensorFlow, so the CLI's ``--help`` is instant and a nonsense
combination of options is refused before anything heavy is loaded.
"""

from __future__ import annotations

from typing import Any

BACKBONES: tuple[str, ...] = ("small_cnn", "mobilenet_v3_small", "efficientnet_b0", "vgg16")
PRETRAINABLE_BACKBONES: tuple[str, ...] = BACKBONES[1:]
TEXT_ENCODERS: tuple[str, ...] = ("ngrams", "lstm", "bilstm", "gru")
SEQUENCE_ENCODERS: tuple[str, ...] = ("lstm", "bilstm", "gru")
FUSIONS: tuple[str, ...] = ("concat", "multiply", "bilinear")
NGRAM_WEIGHTINGS: tuple[str, ...] = ("count", "tf_idf")
# Chosen by measurement (README, "Choosing the text encoder"): n-gram bags are as good
# as the LSTM or better on the demo set and on real short texts, and faster.
DEFAULT_TEXT_ENCODER = "ngrams"

# How many weighted layers, counted from the top of the backbone, the fine-tune phase
# unfreezes by default: about the last block of each architecture.
FINE_TUNE_LAYERS: dict[str, int] = {
    "mobilenet_v3_small": 8,
    "efficientnet_b0": 10,
    "vgg16": 3,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The original design: ImageNet VGG16 frozen as a feature extractor at 224x224,
    # Embedding + LSTM(128), concatenation, Dense(256, relu), softmax; Adam, cross-entropy.
    "seed": {
        "backbone": "vgg16",
        "image_weights": "imagenet",
        "freeze_backbone": True,
        "image_size": (224, 224),
        "text_encoder": "lstm",
        "embedding_dim": 128,
        "text_units": 128,
        "fusion": "concat",
        "hidden_units": 256,
        "dropout": 0.0,
    },
}


class OptionError(ValueError):
    """Options that cannot be combined; the message says which and why."""


def apply_preset(preset: str | None, chosen: dict[str, Any]) -> dict[str, Any]:
    """Fill the options the user left as ``None`` from ``preset``.

    An option the user set to a value other than the preset's is refused, because the
    preset promises one exact model. ``image_weights`` is the exception: a local file of
    the same weights may replace the download.
    """
    if preset is None:
        return dict(chosen)
    if preset not in PRESETS:
        raise OptionError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    out = dict(chosen)
    for key, value in PRESETS[preset].items():
        given = chosen.get(key)
        if given is None:
            out[key] = value
        elif key == "image_weights" and given != "none":
            out[key] = given
        elif given != value:
            flag = "--" + key.replace("_", "-")
            raise OptionError(f"--preset {preset} fixes {flag} to {value!r}; got {given!r}")
    return out


def check_combination(
    *,
    backbone: str,
    image_weights: str,
    freeze_backbone: bool,
    fine_tune_epochs: int = 0,
    fine_tune_layers: int | None = None,
    text_encoder: str = DEFAULT_TEXT_ENCODER,
) -> None:
    """Refuse combinations that would silently do something other than asked."""
    if backbone not in BACKBONES:
        raise OptionError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
    if text_encoder not in TEXT_ENCODERS:
        raise OptionError(
            f"unknown text encoder {text_encoder!r}; choose from {', '.join(TEXT_ENCODERS)}"
        )
    pretrained = image_weights != "none"
    if backbone == "small_cnn" and pretrained:
        raise OptionError(
            "--image-weights needs a keras.applications backbone "
            f"({', '.join(PRETRAINABLE_BACKBONES)}); small_cnn has no pretrained weights"
        )
    if freeze_backbone and not pretrained:
        raise OptionError(
            "--freeze-backbone without --image-weights would freeze random weights; "
            "give weights (imagenet or a file) or drop --freeze-backbone"
        )
    if fine_tune_epochs < 0:
        raise OptionError("--fine-tune-epochs must be >= 0")
    if fine_tune_epochs and not freeze_backbone:
        raise OptionError(
            "--fine-tune-epochs needs a frozen backbone first (--freeze-backbone with "
            "--image-weights): an unfrozen backbone already trains from the first step"
        )
    if fine_tune_layers is not None:
        if not fine_tune_epochs:
            raise OptionError("--fine-tune-layers applies only with --fine-tune-epochs N > 0")
        if fine_tune_layers < 1:
            raise OptionError("--fine-tune-layers must be >= 1")
