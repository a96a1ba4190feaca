"""Probabilities to response bodies: labelled, sorted, cut to top_k."""

from __future__ import annotations

from collections.abc import Sequence

from service.serving.api.v1.schemas import BatchResult, ClassProbability


def rank(probabilities: Sequence[float], labels: Sequence[str], top_k: int | None) -> BatchResult:
    """Label each probability and sort them, highest first (ties keep label order).

    ``top_k`` larger than the number of classes returns every class.
    """
    order = sorted(range(len(labels)), key=lambda i: -probabilities[i])
    if top_k is not None:
        order = order[:top_k]
    predictions = [ClassProbability(label=labels[i], probability=probabilities[i]) for i in order]
    return BatchResult(label=predictions[0].label, predictions=predictions)
