"""Shared fixtures: a real tiny artifact trained once per test run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.shared import built_once

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_IMAGE_SIZE = (48, 48)


@pytest.fixture(scope="session")
def demo_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset (1200 examples) on disk."""
    from service.training.demo_data import generate

    folder = built_once(
        tmp_path_factory, "demo", lambda out: generate(out, count=1200, seed=1, side=64)
    )
    return folder / "manifest.csv"


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory, demo_manifest: Path) -> Path:
    """A model store holding ``tiny/1``: a real model trained on the demo set (about a minute).

    Small (48x48 images) but trained long enough that fusion measurably beats either
    modality alone.
    """
    from service.training.modeling import ModelConfig
    from service.training.train import TrainConfig, train

    def build(store: Path) -> None:
        train(
            TrainConfig(
                data=demo_manifest,
                name="tiny",
                model_store=store,
                model=ModelConfig(
                    image_size=TINY_IMAGE_SIZE,
                    vocab_size=200,
                    sequence_length=12,
                    fusion="bilinear",
                ),
                epochs=25,
                batch_size=16,
                patience=8,
                seed=3,
            ),
            progress=lambda _m: None,
        )

    return built_once(tmp_path_factory, "store", build)
