"""Several devices: mirrored training over two logical CPUs equals one device, and the
Keras work-arounds distributed training needs are checked against the Keras they were
written for (tests/training/test_multiworker.py trains on two workers)."""

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


def test_the_multi_worker_workaround_still_targets_the_bug() -> None:
    """Fails when Keras changes: then check tensorflow/tensorflow#72388 and the work-around
    (a multi-worker mean over axis 0, which a scalar metric does not have)."""
    import keras

    from service.training.distribute import PATCHED_KERAS, trainer_module

    assert keras.__version__.startswith(PATCHED_KERAS), keras.__version__
    module = trainer_module()
    source = inspect.getsource(module.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in source
    assert "_collective_all_reduce_multi_worker(strategy)" in source
    assert callable(module._collective_all_reduce_multi_worker)


def test_the_workarounds_apply_only_while_a_strategy_trains() -> None:
    from service.training.distribute import keras_workarounds, target, trainer_module

    cls, module = target(), trainer_module()
    build, reduce = cls._maybe_symbolic_build, module.reduce_per_replica
    with keras_workarounds(False):
        assert (cls._maybe_symbolic_build, module.reduce_per_replica) == (build, reduce)
    with keras_workarounds(True):
        assert cls._maybe_symbolic_build is not build
        assert module.reduce_per_replica is reduce  # one machine: no multi-worker patch
    with keras_workarounds(True, multi_worker=True):
        assert cls._maybe_symbolic_build is not build
        assert module.reduce_per_replica is not reduce
    assert (cls._maybe_symbolic_build, module.reduce_per_replica) == (build, reduce)


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
