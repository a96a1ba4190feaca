"""The one way every protocol runs items through a model version: decode (a missing
modality becomes the model's trained blank), then batch."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from service.preprocessing import Blanks
from service.serving.dataplane.items import Item
from service.serving.dataplane.modality import blanks_of, count_unsupported
from service.serving.dataplane.traffic import observe
from service.serving.inference.runtime import Runtime
from service.serving.metrics import MODEL_PREDICTIONS
from service.serving.request_record import note_items


async def model_inputs(
    runtime: Runtime, items: Sequence[Item], blanks: Blanks
) -> tuple[np.ndarray, list[str]]:
    """The model's inputs for the items: decoded pixels ``[N, H, W, 3]`` and texts, with
    ``blanks`` where a modality is missing (pixels, never an encoded file)."""
    images = await runtime.decoder.decode([item.image for item in items], blanks.image)
    return images, _texts(items, blanks)


def _texts(items: Sequence[Item], blanks: Blanks) -> list[str]:
    """The items' texts, with the trained blank where one is missing."""
    return [blanks.text if item.text is None else item.text for item in items]


async def predict_items(runtime: Runtime, items: Sequence[Item]) -> np.ndarray:
    """Probabilities ``[N, C]`` for the items, in order, through the runtime's decoder and
    batcher (announced before decoding, so that bursts share one model call)."""
    note_items(len(items))  # for the access log
    batcher = runtime.batcher
    blanks = blanks_of(runtime.classifier)
    with batcher.arriving() as arrival:
        image = items[0].image if len(items) == 1 else None
        if image is not None and not batcher.refusing:
            # The usual request: its decoding thread queues it for the model itself. Not
            # while requests are refused: the event loop, which refuses them, then paces
            # the decoding threads instead of losing the cores to them.
            decoder = runtime.decoder
            probabilities = await batcher.predict_prepared(
                functools.partial(decoder.decode_one, image),
                _texts(items, blanks),
                decoder.executor,
                arrival,
            )
        else:
            images, texts = await model_inputs(runtime, items, blanks)
            probabilities = await batcher.predict(images, texts, arrival)
    model = runtime.classifier
    MODEL_PREDICTIONS.labels(model.name, str(model.version)).inc(len(items))
    count_unsupported(model, items)
    observe(runtime, items, probabilities)
    return probabilities
