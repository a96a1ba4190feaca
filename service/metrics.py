"""Prometheus metrics (``prometheus-client``), exposed at ``GET /metrics``.

Metrics live in the process-wide default registry: one process serves one app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import Counter, Gauge, Histogram, Info

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


HTTP_REQUESTS = Counter(
    "mmserve_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ("method", "route", "status"),
)
HTTP_SECONDS = Histogram(
    "mmserve_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method, route template "
    "and status code.",
    ("method", "route", "status"),
    # Up to the default request deadline (30 s), past which a prediction answers 504.
    buckets=(*_TIME_BUCKETS, 30.0),
)
QUEUE_DEPTH = Gauge(
    "mmserve_queue_depth", "Items waiting in the batcher for the model (not those it is running)."
)
MODEL_INFO = Info("mmserve_model", "The model version served now (1, labelled).")


def watch_queue(depth: Callable[[], float]) -> None:
    """Read ``mmserve_queue_depth`` from ``depth`` at every scrape."""
    QUEUE_DEPTH.set_function(depth)


def publish_model(name: str, version: int, device: str) -> None:
    """Label ``mmserve_model_info`` with the model served now (at start-up and each reload)."""
    MODEL_INFO.info({"name": name, "version": str(version), "device": device})
