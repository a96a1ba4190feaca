"""Loading a version for serving: every batch size the batcher can form is warmed up."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from service import model_store
from service.serving.inference.classifier import TFClassifier
from service.serving.inference.loading import load_verified


def test_every_batch_size_is_warmed_up(
    trained_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = TFClassifier.warm_up

    def recording(self: TFClassifier, batch_sizes: Iterable[int] = (1, 8)) -> None:
        sizes = list(batch_sizes)
        seen.extend(sizes)
        original(self, sizes)

    monkeypatch.setattr(TFClassifier, "warm_up", recording)
    version = model_store.resolve(trained_store, "tiny")
    classifier = load_verified(version, "/CPU:0", warm_up_batch=5, golden_tolerance=1e-4)

    assert seen == [1, 2, 3, 4, 5]
    h, w = classifier.image_size
    out = classifier.predict(np.zeros((3, h, w, 3), np.float32), ["", "a", "b"])
    assert out.shape == (3, len(classifier.labels))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
