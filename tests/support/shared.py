"""Session fixtures built once per test run, however many pytest-xdist workers run it.

``make test`` runs the suite in two worker processes. Each worker has its own session, so
a session fixture that trains a model would train it once per worker, at the same time, on
the same cores. :func:`built_once` builds the folder in the run's shared temporary root
under a file lock instead: the first worker to ask builds it, the others wait for it and
then read it. The tests treat these folders as read-only (a test that changes a store
works on a copy, see ``tests.support.servers.copy_store``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """``name``'s folder with ``build(folder)`` run in it exactly once in this test run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:  # one process: an ordinary session fixture
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    # The workers' base temporary folders share a parent that belongs to this run alone.
    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    folder = root / name
    done = root / f"{name}.built"  # written last: without it a build was cut short
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.write_text(worker)
    return folder
