"""Training on several devices: the strategy, and one Keras work-around it needs.

``--distribute mirrored`` trains with ``tf.distribute.MirroredStrategy`` over every GPU
of the machine (or the devices given). Keras 3.15 with TF 2.21 fails to start a
distributed fit on a model with string inputs: ``_maybe_symbolic_build`` averages the
first batch across replicas to build the metrics, and averaging strings is impossible
(keras-team/keras#20329); it also draws that batch from the training iterator, which
shifts a seeded shuffle by one pass. The replacement below builds from the model's own
input and output specs instead; it is applied only while a distribution strategy trains, and
``tests/training/test_distribute.py`` fails as soon as Keras changes the method it
replaces, so the work-around is reviewed on every Keras upgrade.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

PATCHED_KERAS = "3.15."  # the Keras minor version the work-around was written for


def strategy(kind: str, devices: list[str] | None = None) -> tf.distribute.Strategy | None:
    """``none`` -> None (the default device), ``mirrored`` -> MirroredStrategy."""
    if kind == "none":
        return None
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    raise ValueError(f"unknown distribution {kind!r}; choose from none, mirrored")


def _symbolic_build_from_specs(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    """Build metrics and optimizer from the model's own input and output specs.

    Nothing is averaged (strings cannot be) and no batch is drawn from ``iterator``, so a
    shuffled dataset gives the same batches, epoch for epoch, as a run on one device.
    """
    if data_batch is None:
        x = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), self._inputs_struct)
        (out,) = self.outputs
        data_batch = (x, tf.TensorSpec(out.shape, out.dtype))
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def target() -> Any:
    """The Keras class whose method the work-around replaces."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    return TensorFlowTrainer


@contextlib.contextmanager
def keras_workarounds(active: bool) -> Iterator[None]:
    """Replace ``_maybe_symbolic_build`` while ``active`` (a strategy trains), then restore."""
    if not active:
        yield
        return
    if not keras.__version__.startswith(PATCHED_KERAS):
        raise RuntimeError(
            f"the distributed-training work-around was written for Keras {PATCHED_KERAS}x, "
            f"not {keras.__version__}: check keras-team/keras#20329 and update "
            "service/training/distribute.py"
        )
    cls = target()
    original = cls._maybe_symbolic_build
    cls._maybe_symbolic_build = _symbolic_build_from_specs
    try:
        yield
    finally:
        cls._maybe_symbolic_build = original
