"""Fixtures of the end-to-end tests: a store of several small, really trained models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.shared import built_once


@pytest.fixture(scope="session")
def registry_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shapes`` 1 and 2 and ``pairs`` 1, trained once per test run (about 20 s)."""
    from tests.support.training import train_registry_store

    def build(folder: Path) -> None:
        (folder / "data").mkdir()
        (folder / "store").mkdir()
        train_registry_store(folder / "data", folder / "store")

    return built_once(tmp_path_factory, "registry", build) / "store"
