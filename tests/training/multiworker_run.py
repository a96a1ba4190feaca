"""Run by test_multiworker.py, once per worker (TF_CONFIG in the environment) and once
alone: trains the tiny model of mirrored_run.py (in memory, or streamed from shards) and
prints, as JSON on its last line, the loss history and the version its train() returned."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from service.training.modeling import ModelConfig
from service.training.train import TrainConfig, train


def main(mode: str, manifest: str, store: str, data_mode: str = "auto") -> None:
    result = train(
        TrainConfig(
            data=Path(manifest),
            name="mw",
            model_store=Path(store),
            # No dropout: its random masks are drawn per replica, so they cannot match.
            model=ModelConfig(image_size=(32, 32), vocab_size=200, text_units=16, dropout=0.0),
            epochs=2,
            batch_size=16,
            distribute=mode,
            data_mode=data_mode,
        ),
        progress=lambda m: print(m, flush=True),
    )
    version = result.version
    print(
        json.dumps(
            {"loss": result.history["loss"], "version": version.version, "path": str(version.path)}
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
