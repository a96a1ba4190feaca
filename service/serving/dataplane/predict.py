"""The one way every protocol runs items through a model version: decode, then batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.serving.api.middleware.observability import note_items
from service.serving.dataplane.items import Item
from service.serving.dataplane.traffic import observe
from service.serving.inference.runtime import Runtime
from service.serving.metrics import MODEL_PREDICTIONS


async def predict_items(runtime: Runtime, items: Sequence[Item]) -> np.ndarray:
    """Probabilities ``[N, C]`` for the items, in order, through the runtime's decoder and
    batcher (announced before decoding, so that bursts share one model call)."""
    note_items(len(items))  # for the access log
    with runtime.batcher.arriving(len(items)) as arrival:
        images = await runtime.decoder.decode([item.image or b"" for item in items])
        texts = [item.text or "" for item in items]
        probabilities = await runtime.batcher.predict(images, texts, arrival)
    model = runtime.classifier
    MODEL_PREDICTIONS.labels(model.name, str(model.version)).inc(len(items))
    observe(runtime, items, probabilities)
    return probabilities
