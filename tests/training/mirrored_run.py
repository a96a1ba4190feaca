"""Run by test_distribute.py in a fresh process: two logical CPUs must exist before
TensorFlow starts. Trains the same tiny model on one device and mirrored over two, and
prints both loss histories and both published versions as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from service.training.modeling import ModelConfig  # noqa: E402
from service.training.train import TrainConfig, train  # noqa: E402


def main(manifest: str, store: str) -> None:
    out = {}
    for mode, devices in (("none", None), ("mirrored", ("/cpu:0", "/cpu:1"))):
        result = train(
            TrainConfig(
                data=Path(manifest),
                name=mode,
                model_store=Path(store),
                # No dropout: its random masks are drawn per replica, so they cannot match.
                model=ModelConfig(image_size=(32, 32), vocab_size=200, text_units=16, dropout=0.0),
                epochs=2,
                batch_size=16,
                distribute=mode,
                devices=devices,
            ),
            progress=lambda _m: None,
        )
        meta = json.loads((result.version.path / "metadata.json").read_text())
        out[mode] = {"loss": meta["training"]["history"]["loss"], "path": str(result.version.path)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
