"""Probabilities to response bodies: labelled, sorted, cut to top_k, explained."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.serving.api.v1.schemas import ClassProbability, Explanation, ModalityEffect, Ranked
from service.serving.dataplane.explain import effect


def rank(probabilities: Sequence[float], labels: Sequence[str], top_k: int | None) -> Ranked:
    """Label each probability and sort them, highest first (ties keep label order).

    ``top_k`` larger than the number of classes returns every class.
    """
    order = sorted(range(len(labels)), key=lambda i: -probabilities[i])
    if top_k is not None:
        order = order[:top_k]
    predictions = [ClassProbability(label=labels[i], probability=probabilities[i]) for i in order]
    return Ranked(label=predictions[0].label, predictions=predictions)


def explanation(rows: np.ndarray, labels: Sequence[str]) -> Explanation:
    """The explanation of one item from its ``[3, C]`` rows (full, image only, text only)."""
    full, image_only, text_only = (rank(row, labels, None) for row in rows.tolist())

    def removing(without: np.ndarray) -> ModalityEffect:
        change = effect(rows[0], without)
        return ModalityEffect(
            label=labels[change.top],
            probability_change=change.probability_change,
            top_class_changes=change.top_class_changes,
        )

    return Explanation(
        full=full,
        image_only=image_only,
        text_only=text_only,
        without_image=removing(rows[2]),
        without_text=removing(rows[1]),
    )
