"""``explain=modality``: each item three times through the model, in one batch (as sent,
its text blanked, its image blanked), and what removing each modality changes.

The cost is three items per item: the three go to the batcher as one request, so they
share one model call with each other (and with whatever else is queued).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from service.serving.dataplane.items import Item
from service.serving.dataplane.modality import blanks_of, count_unsupported
from service.serving.dataplane.predict import model_inputs
from service.serving.dataplane.traffic import observe
from service.serving.inference.runtime import Runtime
from service.serving.metrics import MODEL_PREDICTIONS
from service.serving.request_record import note_items

Explain = Literal["modality"]
"""The explanations a request may ask for."""

EXPLAIN_METHODS: tuple[Explain, ...] = ("modality",)

VARIANTS = ("full", "image_only", "text_only")
"""The rows of an explanation: as sent, the text blanked, the image blanked."""


class Effect(NamedTuple):
    """What removing one modality does to the full input's top class."""

    top: int
    """The top class (index) without the modality."""
    probability_change: float
    """The full input's top class: its probability without the modality minus with it."""
    top_class_changes: bool
    """Whether the top class without the modality is another one."""


def effect(full: np.ndarray, without: np.ndarray) -> Effect:
    """The :class:`Effect` of removing a modality, from one item's probability vectors
    (ties go to the first class, as in the ranking)."""
    top = int(np.argmax(full))
    other = int(np.argmax(without))
    return Effect(other, float(without[top] - full[top]), other != top)


async def explain_items(runtime: Runtime, items: Sequence[Item]) -> np.ndarray:
    """Probabilities ``[N, 3, C]``: per item, :data:`VARIANTS` in order, from one batcher
    request of ``3N`` items (the batcher never splits a request: they share a model call)."""
    n = len(items)
    note_items(3 * n)
    classifier = runtime.classifier
    blanks = blanks_of(classifier)
    with runtime.batcher.arriving() as arrival:
        images, texts = await model_inputs(runtime, items, blanks)
        blank_images = np.broadcast_to(blanks.image, images.shape)
        probabilities = await runtime.batcher.predict(
            np.concatenate([images, images, blank_images]),
            texts + [blanks.text] * n + texts,
            arrival,
        )
    MODEL_PREDICTIONS.labels(classifier.name, str(classifier.version)).inc(n)
    count_unsupported(classifier, items)
    variants = np.asarray(probabilities).reshape(3, n, -1).transpose(1, 0, 2)
    observe(runtime, items, variants[:, 0])  # drift and capture see the answer, as sent
    return variants
