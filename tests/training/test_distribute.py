"""Several devices: mirrored training over two logical CPUs equals one device, and the
Keras work-around it needs is checked against the Keras it was written for."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import model_store
from tests.support.training import serve_check


def test_the_keras_workaround_still_targets_the_bug() -> None:
    """Fails when Keras changes: then check keras-team/keras#20329 and the work-around."""
    import keras

    from service.training.distribute import PATCHED_KERAS, target

    assert keras.__version__.startswith(PATCHED_KERAS), keras.__version__
    source = inspect.getsource(target()._maybe_symbolic_build)
    assert 'reduce(\n                        "MEAN"' in source or '"MEAN"' in source


@pytest.mark.slow
def test_mirrored_over_two_cpus_equals_one_device(tiny_manifest: Path, tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.training.mirrored_run", str(tiny_manifest), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    single, mirrored = runs["none"]["loss"], runs["mirrored"]["loss"]
    assert len(single) == len(mirrored) == 2
    assert max(abs(a - b) for a, b in zip(single, mirrored, strict=True)) < 1e-5, runs
    version = model_store.resolve(tmp_path, "mirrored")
    assert serve_check(version) <= 1e-4
