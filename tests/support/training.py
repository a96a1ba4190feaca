"""Helpers shared by the trainer tests (imported, never collected)."""

from __future__ import annotations

from pathlib import Path

from service import model_store
from service.serving.inference.loading import load_verified
from service.training.modeling import ModelConfig
from service.training.train import TrainConfig, TrainResult, train


def quick_train(
    manifest: Path, store: Path, name: str, model: ModelConfig, **kw: object
) -> TrainResult:
    """One short, quiet training run published to ``store``."""
    config = TrainConfig(
        data=manifest,
        name=name,
        model_store=store,
        model=model,
        **{"epochs": 1, "batch_size": 16, **kw},  # type: ignore[arg-type]
    )
    return train(config, progress=lambda _m: None)


def serve_check(version: model_store.ModelVersion) -> float:
    """Load the version as the service does at start-up (golden check included, through
    the compiled text encoder when the model has a recurrent one)."""
    from service.serving.inference.golden import verify_golden

    classifier = load_verified(
        version, "/CPU:0", warm_up_batch=2, golden_tolerance=1e-4, compile_text=True
    )
    return verify_golden(classifier, version).max_abs_diff


# Two tiny models with different label sets, one of them in two versions: the quickest
# real artifacts that still tell the service's routes apart (seconds each, not accurate).
_TINY = ModelConfig(
    image_size=(16, 16),
    vocab_size=50,
    sequence_length=8,
    embedding_dim=8,
    text_units=8,
    fusion_dim=8,
    hidden_units=16,
)
REGISTRY_MODELS = {"shapes": 2, "pairs": 1}
"""The models of :func:`train_registry_store` and how many versions each has."""


def train_registry_store(data: Path, store: Path) -> Path:
    """A store with ``shapes`` 1 and 2 (3 labels: the shape) and ``pairs`` 1 (the demo
    set's 6 labels), each trained separately from a small demo set generated in ``data``."""
    import csv

    from service.training.demo_data import generate

    manifest = generate(data, count=120, seed=4, side=32)
    with manifest.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    shapes = data / "shapes.csv"
    with shapes.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "text", "label"])
        writer.writerows((r["image"], r["text"], r["label"].split("_")[0]) for r in rows)
    for seed in range(REGISTRY_MODELS["shapes"]):
        quick_train(shapes, store, "shapes", _TINY, seed=seed)
    quick_train(manifest, store, "pairs", _TINY)
    return store
