"""Pretrained backbones: weights loaded by path, frozen layers stay frozen, fine-tuning
changes only the layers it unfreezes, BatchNorm never leaves inference mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SIZE = (32, 32)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised MobileNetV3Small's weights: no download needed."""
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV3Small(
        input_shape=(*SIZE, 3), include_top=False, weights=None, pooling="avg"
    )
    path = tmp_path_factory.mktemp("weights") / "mobilenet.weights.h5"
    base.save_weights(path)
    return path


def _backbone_weights(model: object) -> dict[str, list[np.ndarray]]:
    from service.training.modeling import backbone_of

    base = backbone_of(model)  # type: ignore[arg-type]
    assert base is not None
    return _weights(base)


def _weights(model: object) -> dict[str, list[np.ndarray]]:
    """Every weighted layer's weights (BatchNorm's moving statistics included), by name."""
    return {
        layer.name: [np.array(w) for w in layer.get_weights()]
        for layer in model.layers  # type: ignore[attr-defined]
        if layer.weights
    }


def _changed(before: dict[str, list[np.ndarray]], after: dict[str, list[np.ndarray]]) -> set[str]:
    return {
        name
        for name, ws in before.items()
        if any(not np.array_equal(a, b) for a, b in zip(ws, after[name], strict=True))
    }


def _fit_once(model: object, learning_rate: float) -> None:
    from service.training import pipeline
    from service.training.train import _compile

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, *SIZE, 3), dtype=np.uint8)
    texts = np.array([f"word{i % 7} thing" for i in range(64)], dtype=object)
    labels = rng.integers(0, 3, size=64)
    _compile(model, learning_rate)  # type: ignore[arg-type]
    data = pipeline.from_memory(images, texts, labels, 3, 16, shuffle_seed=0)
    model.fit(data, epochs=1, verbose=0)  # type: ignore[attr-defined]


def test_frozen_backbone_and_fine_tune_touch_only_what_they_should(weights_file: Path) -> None:
    import keras

    from service.training.modeling import ModelConfig, backbone_of, build_model, unfreeze_top

    config = ModelConfig(
        image_size=SIZE,
        backbone="mobilenet_v3_small",
        image_weights=str(weights_file),
        freeze_backbone=True,
    )
    model = build_model(config, 3, np.array(["word1 thing", "word2 thing"], dtype=object))
    reference = keras.applications.MobileNetV3Small(
        input_shape=(*SIZE, 3), include_top=False, weights=None, pooling="avg"
    )
    reference.load_weights(weights_file)
    loaded = _backbone_weights(model)
    expected = _weights(reference)
    assert _changed(expected, loaded) == set(), "the weights file was not loaded"

    _fit_once(model, 1e-2)
    after_frozen = _backbone_weights(model)
    assert _changed(loaded, after_frozen) == set(), "a frozen layer (or BatchNorm) moved"

    unfrozen = unfreeze_top(model, "mobilenet_v3_small", 2)
    _fit_once(model, 1e-2)
    after_tune = _backbone_weights(model)
    assert _changed(after_frozen, after_tune) == set(unfrozen)
    base = backbone_of(model)
    assert base is not None
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not {layer.name for layer in norms} & set(unfrozen)


def test_seed_preset_builds_the_original_design(tmp_path: Path) -> None:
    import keras

    from service.training.modeling import ModelConfig, backbone_of, build_model
    from service.training.options import apply_preset

    vgg = keras.applications.VGG16(
        input_shape=(224, 224, 3), include_top=False, weights=None, pooling="avg"
    )
    weights = tmp_path / "vgg16.weights.h5"
    vgg.save_weights(weights)
    options = apply_preset("seed", {"image_weights": str(weights)})
    model = build_model(ModelConfig(**options), 4, np.array(["a red thing"], dtype=object))
    assert model.input["image"].shape == (None, 224, 224, 3)
    base = backbone_of(model)
    assert base is not None and base.name == "vgg16" and not base.trainable_weights
    assert model.get_layer("text_encoder").get_layer("lstm").units == 128
    assert isinstance(model.get_layer("fusion"), keras.layers.Concatenate)
    assert model.get_layer("hidden").units == 256
    assert model.get_layer("probabilities").activation.__name__ == "softmax"
