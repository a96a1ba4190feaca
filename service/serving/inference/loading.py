"""Load one model version for serving: the steps start-up and hot reload share."""

from __future__ import annotations

import logging
import time

from service.model_store import ModelVersion
from service.serving.inference.classifier import TFClassifier
from service.serving.inference.golden import verify_golden

log = logging.getLogger("mmserve.loading")


def load_verified(
    version: ModelVersion,
    device: str,
    *,
    warm_up_batch: int,
    golden_tolerance: float,
    compile_text: bool = False,
) -> TFClassifier:
    """Load ``version`` on ``device``, compile and warm it up, and replay its golden
    examples; raise :class:`~service.errors.ServiceError` when any step fails.

    Slow (seconds) and blocking: call it from a worker thread when a loop is running.
    """
    log.info(
        "loading %s version %d from %s on %s", version.name, version.version, version.path, device
    )
    classifier = TFClassifier(version, device, compile_text=compile_text)
    # Every batch size the batcher can form, not just the extremes: the CPU kernels cache
    # one primitive (and its scratch memory) per input shape, so a size first met under
    # load would cost that request its creation time and grow the process's memory then.
    started = time.perf_counter()
    classifier.warm_up(range(1, warm_up_batch + 1))
    log.info(
        "warmed up batch sizes 1-%d in %.2f s%s",
        warm_up_batch,
        time.perf_counter() - started,
        " (text encoder compiled)" if classifier.compiled_batch_sizes else "",
    )
    report = verify_golden(classifier, version, golden_tolerance)
    log.info(
        "golden check passed: %d examples reproduce training within %.1e (tolerance %.0e)%s",
        report.examples,
        report.max_abs_diff,
        report.tolerance,
        f", one by one and in batches of {', '.join(map(str, report.batch_sizes))}"
        if report.batch_sizes
        else "",
    )
    return classifier
