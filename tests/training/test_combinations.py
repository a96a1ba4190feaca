"""Every backbone, fusion and text encoder: trained briefly, published, reloaded by the
service and golden-checked.

Each run covers one backbone, one encoder and one fusion, so four runs cover every value
of each option (the product, 48 runs, would not fit the suite's time budget). The
keras.applications backbones load a weights file written here from a random
initialisation and train frozen (a trainable EfficientNet alone takes minutes to trace).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service import model_store
from tests.support.training import quick_train, serve_check

pytestmark = pytest.mark.slow

SIZE = (32, 32)

CASES = [
    # backbone, text encoder, fusion, weights file?, fine-tune epochs
    ("small_cnn", "ngrams", "bilinear", False, 0),
    ("mobilenet_v3_small", "lstm", "multiply", True, 0),
    ("efficientnet_b0", "bilstm", "concat", True, 0),
    ("vgg16", "gru", "bilinear", True, 1),
]


def _weights_file(backbone: str, folder: Path) -> Path:
    import keras

    apps = {
        "mobilenet_v3_small": keras.applications.MobileNetV3Small,
        "vgg16": keras.applications.VGG16,
        "efficientnet_b0": keras.applications.EfficientNetB0,
    }
    base = apps[backbone](input_shape=(*SIZE, 3), include_top=False, weights=None, pooling="avg")
    path = folder / f"{backbone}.weights.h5"
    base.save_weights(path)
    return path


@pytest.mark.parametrize(("backbone", "encoder", "fusion", "pretrained", "fine_tune"), CASES)
def test_option_trains_saves_reloads_and_passes_the_golden_check(
    tiny_manifest: Path,
    tmp_path: Path,
    backbone: str,
    encoder: str,
    fusion: str,
    pretrained: bool,
    fine_tune: int,
) -> None:
    import tensorflow as tf

    from service.training.modeling import ModelConfig

    weights = str(_weights_file(backbone, tmp_path)) if pretrained else "none"
    result = quick_train(
        tiny_manifest,
        tmp_path / "store",
        f"{backbone}-{encoder}-{fusion}",
        ModelConfig(
            image_size=SIZE,
            backbone=backbone,
            image_weights=weights,
            freeze_backbone=pretrained,
            text_encoder=encoder,
            fusion=fusion,
            vocab_size=200,
            sequence_length=8,
            text_units=16,
        ),
        fine_tune_epochs=fine_tune,
    )
    version = result.version
    meta = json.loads((version.path / model_store.METADATA_FILE).read_text())
    assert meta["training"]["model"]["backbone"] == backbone
    assert meta["training"]["model"]["image_weights"] == weights
    assert meta["training"]["model"]["text_encoder"] == encoder
    assert len(meta["training"]["history"]["loss"]) == 1 + fine_tune
    # The service's own start-up path: load, warm up, replay the golden examples.
    assert serve_check(version) <= 1e-4
    # The SavedModel export gives the same probabilities as training did.
    golden = model_store.load_golden(version.path)
    from service.serving.inference.golden import golden_pixels

    pixels = np.stack([golden_pixels(version.golden_dir, ex, SIZE) for ex in golden.examples])
    texts = np.array([[ex.text] for ex in golden.examples])
    serve = tf.saved_model.load(str(version.path / "saved_model")).signatures["serving_default"]
    (probs,) = serve(image=tf.constant(pixels), text=tf.constant(texts)).values()
    expected = np.array([ex.probabilities for ex in golden.examples], dtype=np.float32)
    assert np.abs(probs.numpy() - expected).max() < 1e-4
