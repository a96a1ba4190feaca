"""Training on several devices and several machines: the strategies, each worker's role,
and the two Keras work-arounds they need.

``--distribute mirrored`` trains with ``tf.distribute.MirroredStrategy`` over every GPU
of the machine (or the devices given); ``--distribute multiworker`` with
``tf.distribute.MultiWorkerMirroredStrategy`` over the machines ``TF_CONFIG`` names
(collective all-reduce over gRPC, each worker using its own devices). Every worker runs
the same program; only the chief publishes (:func:`role`, ``cluster.py``).

Keras 3.15 with TF 2.21 needs two work-arounds, both kept here, both applied only while a
strategy trains, both checked by ``tests/training/test_distribute.py``, which fails as soon
as Keras changes a function replaced here (and ``pyproject.toml`` pins Keras to 3.15):

1. Under any strategy, on a model with string inputs: ``_maybe_symbolic_build`` averages
   the first batch across replicas to build the metrics, and averaging strings is
   impossible (keras-team/keras#20329); it also draws that batch from the training
   iterator, which shifts a seeded shuffle by one pass. The replacement builds from the
   model's own input and output specs instead.
2. Under ``MultiWorkerMirroredStrategy`` only: ``reduce_per_replica`` averages each
   step's logged metrics with ``strategy.reduce("MEAN", v, axis=0)``, and a scalar (the
   loss) has no axis 0: "Invalid reduction dimension 0 for input with 0 dimensions"
   (tensorflow/tensorflow#72388). The replacement averages scalars over the replicas
   alone (``axis=None``), as the one-machine branch of the same function does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from service.training.cluster import ALONE, Role, role_in

PATCHED_KERAS = "3.15."  # the Keras minor version the work-arounds were written for
KINDS = ("none", "mirrored", "multiworker")


def strategy(kind: str, devices: list[str] | None = None) -> tf.distribute.Strategy | None:
    """``none`` -> None (the default device), ``mirrored`` -> MirroredStrategy,
    ``multiworker`` -> MultiWorkerMirroredStrategy from ``TF_CONFIG`` (one worker when
    it is unset).

    A multi-worker strategy configures TensorFlow's collective operations, which is only
    possible before TensorFlow has run anything in the process: create it first.
    """
    if kind == "none":
        return None
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multiworker":
        if devices:
            raise ValueError("multiworker uses every device of each worker; devices are not set")
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            if "program startup" not in str(exc):
                raise
            raise RuntimeError(
                "--distribute multiworker must create its strategy before TensorFlow runs "
                "anything in this process; train in a fresh process"
            ) from exc
    raise ValueError(f"unknown distribution {kind!r}; choose from {', '.join(KINDS)}")


def role(strat: tf.distribute.Strategy | None) -> Role:
    """This process's role under ``strat`` (the only worker when not multi-worker)."""
    resolver = getattr(strat, "cluster_resolver", None)
    if not isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return ALONE
    return role_in(resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)


def is_multi_worker(strat: tf.distribute.Strategy | None) -> bool:
    return isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy)


def agree(strat: tf.distribute.Strategy, value: int) -> int:
    """The largest of one integer given by every worker: a collective operation, so every
    worker must call it, and it returns once all have (or fails when one has died)."""

    def gather(mine: tf.Tensor) -> tf.Tensor:
        return strat.gather(strat.run(lambda: tf.reshape(mine, [1])), axis=0)

    # In a tf.function: eagerly, TensorFlow warns that a collective strategy is slow.
    return int(tf.reduce_max(tf.function(gather)(tf.constant(value, tf.int64))).numpy())


# ------------------------------------------------------------------- the work-arounds


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
    """The Keras class whose method work-around 1 replaces."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    return TensorFlowTrainer


def trainer_module() -> Any:
    """The Keras module whose ``reduce_per_replica`` work-around 2 replaces."""
    from keras.src.backend.tensorflow import trainer

    return trainer


def _rank(value: Any) -> int | None:
    if isinstance(value, tf.distribute.DistributedValues):
        value = value.values[0]
    rank: int | None = tf.convert_to_tensor(value).shape.rank
    return rank


def _reduce_per_replica(original: Any) -> Any:
    """``reduce_per_replica`` whose multi-worker mean reduces a scalar over replicas only."""

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and trainer_module()._collective_all_reduce_multi_worker(
            strategy
        ):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if _rank(v) == 0 else 0), values
            )
        return original(values, strategy, reduction)

    return reduce_per_replica


@contextlib.contextmanager
def keras_workarounds(active: bool, multi_worker: bool = False) -> Iterator[None]:
    """While ``active`` (a strategy trains), replace ``_maybe_symbolic_build``, and with
    ``multi_worker`` also ``reduce_per_replica``; restore both afterwards."""
    if not active:
        yield
        return
    if not keras.__version__.startswith(PATCHED_KERAS):
        raise RuntimeError(
            f"the distributed-training work-arounds were written for Keras {PATCHED_KERAS}x, "
            f"not {keras.__version__}: check keras-team/keras#20329 and "
            "tensorflow/tensorflow#72388 and update service/training/distribute.py"
        )
    cls, module = target(), trainer_module()
    original_build, original_reduce = cls._maybe_symbolic_build, module.reduce_per_replica
    cls._maybe_symbolic_build = _symbolic_build_from_specs
    if multi_worker:
        module.reduce_per_replica = _reduce_per_replica(original_reduce)
    try:
        yield
    finally:
        cls._maybe_symbolic_build = original_build
        module.reduce_per_replica = original_reduce
