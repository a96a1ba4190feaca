"""Prometheus metrics (``prometheus-client``), exposed at ``GET /metrics``.

Metrics live in the process-wide default registry: one process serves one app.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

BATCH_SIZE = Histogram("mmserve_batch_size", "Items per model call.", buckets=_BATCH_BUCKETS)
QUEUE_SECONDS = Histogram(
    "mmserve_queue_seconds", "Time a request waited for the model.", buckets=_TIME_BUCKETS
)
INFERENCE_SECONDS = Histogram(
    "mmserve_inference_seconds", "Time of one batched model call.", buckets=_TIME_BUCKETS
)
ITEMS = Counter("mmserve_items_inferred", "Image+text pairs the model has scored.")
REQUESTS_IN_FLIGHT = Gauge(
    "mmserve_requests_in_flight",
    "Requests holding a model runtime (predictions, model info, readiness) not yet answered; "
    "a shutdown or reload waits for them.",
)


class BatchMetrics:
    """The batcher's observer: one observation per model call."""

    def observe_batch(
        self, size: int, queue_seconds: Sequence[float], inference_seconds: float
    ) -> None:
        BATCH_SIZE.observe(size)
        ITEMS.inc(size)
        INFERENCE_SECONDS.observe(inference_seconds)
        for seconds in queue_seconds:
            QUEUE_SECONDS.observe(seconds)
