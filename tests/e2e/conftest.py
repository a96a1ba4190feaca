"""Fixtures of the end-to-end tests: a store of several small, really trained models."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def registry_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shapes`` 1 and 2 and ``pairs`` 1, trained once per session (about 20 s)."""
    from tests.support.training import train_registry_store

    return train_registry_store(
        tmp_path_factory.mktemp("registry-data"), tmp_path_factory.mktemp("registry-store")
    )
