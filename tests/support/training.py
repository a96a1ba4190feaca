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
    """Load the version as the service does at start-up (golden check included)."""
    from service.serving.inference.golden import verify_golden

    classifier = load_verified(version, "/CPU:0", warm_up_batch=2, golden_tolerance=1e-4)
    return verify_golden(classifier, version).max_abs_diff
