"""Streaming from prepared shards: the service's own pixels, the same fingerprint as the
in-memory path, and a streamed run that repeats exactly for a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import model_store
from tests.support.training import quick_train

pytestmark = pytest.mark.slow

SIZE = (32, 32)


def test_shards_hold_the_services_pixels_and_the_same_fingerprint(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    from service.preprocessing import decode_image
    from service.training.dataset import load_dataset
    from service.training.pipeline import from_shards
    from service.training.shards import load_prepared, prepare

    folder = prepare(tiny_manifest, tmp_path / "prep", SIZE, seed=0, progress=lambda _m: None)
    streamed = load_prepared(folder, SIZE)
    in_memory = load_dataset(tiny_manifest, SIZE, seed=0, progress=lambda _m: None)
    assert streamed.fingerprint == in_memory.fingerprint
    assert streamed.labels == in_memory.labels and streamed.counts == in_memory.counts
    assert streamed.shards is not None
    test_rows = streamed.indices("test")
    batch = next(
        iter(
            from_shards(streamed.shards["test"], SIZE, len(streamed.labels), 4, with_targets=False)
        )
    )
    for k, i in enumerate(test_rows[:4]):
        expected = decode_image(streamed.rows[i].image.read_bytes(), SIZE).astype(np.float32)
        assert np.array_equal(batch["image"][k].numpy(), expected)
        assert batch["text"][k, 0].numpy().decode() == streamed.rows[i].text
    assert isinstance(batch["image"], tf.Tensor)


def test_streamed_training_repeats_for_a_seed(tiny_manifest: Path, tmp_path: Path) -> None:
    from service.training.modeling import ModelConfig

    def run() -> list[list[float]]:
        result = quick_train(
            tiny_manifest,
            tmp_path / "store",
            "streamed",
            ModelConfig(image_size=SIZE, vocab_size=200, text_units=16),
            data_mode="stream",
            shuffle_buffer=32,
            modality_dropout=0.2,
            epochs=2,
        )
        meta = model_store.load_metadata(result.version.path)
        assert meta.dataset["streamed"] is True
        return [ex.probabilities for ex in model_store.load_golden(result.version.path).examples]

    assert run() == run()
    assert not any((tmp_path / "store" / ".shards").iterdir())
