"""Load one model version for serving: the steps start-up and hot reload share."""

from __future__ import annotations

import logging

from service.model_store import ModelVersion
from service.serving.inference.classifier import TFClassifier
from service.serving.inference.golden import verify_golden

log = logging.getLogger("mmserve.loading")


def load_verified(
    version: ModelVersion, device: str, *, warm_up_batch: int, golden_tolerance: float
) -> TFClassifier:
    """Load ``version`` on ``device``, compile and warm it up, and replay its golden
    examples; raise :class:`~service.errors.ServiceError` when any step fails.

    Slow (seconds) and blocking: call it from a worker thread when a loop is running.
    """
    log.info(
        "loading %s version %d from %s on %s", version.name, version.version, version.path, device
    )
    classifier = TFClassifier(version, device)
    classifier.warm_up((1, warm_up_batch))
    report = verify_golden(classifier, version, golden_tolerance)
    log.info(
        "golden check passed: %d examples reproduce training within %.1e (tolerance %.0e)",
        report.examples,
        report.max_abs_diff,
        report.tolerance,
    )
    return classifier
