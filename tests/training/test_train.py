"""A real (short) training run: the artifact, its golden proof, export, CLI failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service import model_store
from service.serving.inference.golden import golden_pixels
from tests.conftest import TINY_IMAGE_SIZE

pytestmark = pytest.mark.slow


def golden_inputs(
    version: model_store.ModelVersion, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    golden = model_store.load_golden(version.path)
    pixels = np.stack([golden_pixels(version.golden_dir, ex, size) for ex in golden.examples])
    texts = np.array([[ex.text] for ex in golden.examples])
    expected = np.array([ex.probabilities for ex in golden.examples], dtype=np.float32)
    return pixels, texts, expected


def test_artifact_layout_and_metadata(trained_store: Path) -> None:
    v = model_store.resolve(trained_store, "tiny")
    assert v.version == 1
    for name in (
        "model.keras",
        "metadata.json",
        "evaluation.json",
        "confusion_matrix.png",
        "training_curves.png",
        "golden/golden.json",
        "saved_model/saved_model.pb",
    ):
        assert (v.path / name).is_file(), name
    meta = json.loads((v.path / "metadata.json").read_text())
    assert meta["name"] == "tiny" and meta["version"] == 1
    assert meta["labels"] == sorted(meta["labels"]) and len(meta["labels"]) == 6
    assert meta["image_size"] == list(TINY_IMAGE_SIZE)
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= meta["metrics"]["test"][key] <= 1.0
    assert set(meta["metrics"]["ablation"]) == {"image_only", "text_only"}
    assert set(meta["metrics"]["baselines"]) == {
        "majority",
        "text_tfidf_logreg",
        "image_pixels_logreg",
    }
    for m in meta["metrics"]["baselines"].values():
        assert 0.0 <= m["accuracy"] <= 1.0
    assert meta["plots"] == {
        "confusion_matrix": "confusion_matrix.png",
        "training_curves": "training_curves.png",
    }
    assert 1 <= meta["training"]["best_epoch"] <= meta["training"]["epochs_run"]
    assert len(meta["dataset"]["fingerprint"]) == 64
    assert sum(meta["dataset"]["counts"]["test"].values()) > 0
    assert {"tensorflow", "keras"} <= set(meta["framework"])
    assert meta["created_at"].startswith("20")
    report = json.loads((v.path / "evaluation.json").read_text())
    matrix = np.array(report["confusion_matrix"]["matrix"])
    assert matrix.shape == (6, 6) and matrix.sum() == report["examples"]
    for plot in meta["plots"].values():
        assert (v.path / plot).read_bytes()[:4] == b"\x89PNG"


def test_golden_set_covers_every_class_and_both_blank_paths(trained_store: Path) -> None:
    v = model_store.resolve(trained_store, "tiny")
    golden = model_store.load_golden(v.path)
    labels = model_store.load_metadata(v.path).labels
    assert {ex.label for ex in golden.examples} == set(labels)
    assert any(ex.image is None for ex in golden.examples)
    assert any(ex.text == "" for ex in golden.examples)
    for ex in golden.examples:
        assert abs(sum(ex.probabilities) - 1) < 1e-4


def test_reloaded_keras_model_reproduces_golden(trained_store: Path) -> None:
    import keras

    v = model_store.resolve(trained_store, "tiny")
    pixels, texts, expected = golden_inputs(v, TINY_IMAGE_SIZE)
    model = keras.saving.load_model(v.path / "model.keras")
    import tensorflow as tf

    got = model({"image": tf.constant(pixels), "text": tf.constant(texts)}, training=False)
    assert np.abs(np.asarray(got) - expected).max() < 1e-5


def test_saved_model_export_reproduces_golden(trained_store: Path) -> None:
    import tensorflow as tf

    v = model_store.resolve(trained_store, "tiny")
    pixels, texts, expected = golden_inputs(v, TINY_IMAGE_SIZE)
    loaded = tf.saved_model.load(str(v.path / "saved_model"))
    serve = loaded.signatures["serving_default"]
    out = serve(image=tf.constant(pixels), text=tf.constant(texts))
    (probs,) = out.values()
    assert np.abs(probs.numpy() - expected).max() < 1e-5


def test_fused_model_beats_both_ablations(trained_store: Path) -> None:
    metrics = model_store.load_metadata(model_store.resolve(trained_store, "tiny").path).metrics
    fused = metrics["test"]["accuracy"]
    single = max(m["accuracy"] for m in metrics["ablation"].values())
    assert fused > single + 0.1, metrics


def test_bad_manifest_writes_nothing(tmp_path: Path) -> None:
    from service.training.cli import main

    manifest = tmp_path / "m.csv"
    manifest.write_text("image,text,label\nmissing.png,hello,a\n")
    store = tmp_path / "store"
    assert main(["--data", str(manifest), "--model-store", str(store)]) == 2
    assert model_store.list_models(store) == []


def test_training_is_reproducible_for_a_seed(tiny_manifest: Path, tmp_path: Path) -> None:
    from service.training.modeling import ModelConfig
    from service.training.train import TrainConfig, train

    def run(seed: int) -> list[list[float]]:
        config = TrainConfig(
            data=tiny_manifest,
            name="r",
            model_store=tmp_path,
            model=ModelConfig(image_size=(32, 32), vocab_size=100, sequence_length=8),
            epochs=1,
            seed=seed,
            modality_dropout=0.2,
        )
        result = train(config, progress=lambda _m: None)
        return [ex.probabilities for ex in model_store.load_golden(result.version.path).examples]

    first, second, other = run(5), run(5), run(6)
    assert first == second
    assert first != other
    assert model_store.list_versions(tmp_path, "r") == [1, 2, 3]
