"""Fixtures of the trainer tests: a tiny demo set for the quick model builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.shared import built_once


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 demo examples at 32x32: enough to build, briefly train and golden-check a model."""
    from service.training.demo_data import generate

    folder = built_once(
        tmp_path_factory, "tiny", lambda out: generate(out, count=120, seed=2, side=32)
    )
    return folder / "manifest.csv"
