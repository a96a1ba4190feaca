"""Prometheus metrics (``prometheus-client``), exposed at ``GET /metrics``.

One process: the default registry. Several worker processes (``workers`` > 1): the
supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before starting them, every worker writes its
samples there, and a scrape answered by any worker adds up all of them (prometheus-client's
multiprocess mode): counters and histograms are summed, gauges as each says below.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = bool(os.environ.get(MULTIPROC_DIR_ENV))
"""Whether this process writes its samples for a group of workers: decided once, at import,
exactly as prometheus-client decides where the values live."""

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
    "a shutdown or reload waits for them. Summed over live workers.",
    multiprocess_mode="livesum",
)


class BatchMetrics:
    """The batcher's observer: one observation per model call, and the queue's depth."""

    def observe_batch(
        self, size: int, queue_seconds: Sequence[float], inference_seconds: float
    ) -> None:
        BATCH_SIZE.observe(size)
        ITEMS.inc(size)
        INFERENCE_SECONDS.observe(inference_seconds)
        for seconds in queue_seconds:
            QUEUE_SECONDS.observe(seconds)

    def observe_queue(self, depth: int) -> None:
        QUEUE_DEPTH.set(depth)


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
    "mmserve_queue_depth",
    "Items waiting in the batcher for the model (not those it is running). Summed over live "
    "workers.",
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "mmserve_model_info",
    "The model versions served now (1, labelled). With several workers, versions served "
    "before stay listed with 0.",
    ("name", "version", "device"),
    # Across workers, a version is 1 while any live worker serves it.
    multiprocess_mode="livemax",
)
MODEL_PREDICTIONS = Counter(
    "mmserve_model_predictions",
    "Image+text pairs answered, by model and by the version that answered (a canary's "
    "share shows here).",
    ("model", "version"),
)
SINGLE_MODALITY_WITHOUT_DROPOUT = Counter(
    "mmserve_single_modality_without_dropout",
    "Image-only or text-only pairs answered by a model trained without modality dropout "
    "(each answered with a warning), by model and version.",
    ("model", "version"),
)
_published: set[tuple[str, str, str]] = set()


def publish_models(served: Iterable[tuple[str, int, str]]) -> None:
    """Label ``mmserve_model_info`` with the ``(name, version, device)`` served now (at
    start-up, at each reload, load and unload)."""
    now = {(name, str(version), device) for name, version, device in served}
    for previous in _published - now:
        # Set to 0 first: a worker's samples file keeps the last value written.
        MODEL_INFO.labels(*previous).set(0)
        MODEL_INFO.remove(*previous)
    for labels in now:
        MODEL_INFO.labels(*labels).set(1)
    _published.clear()
    _published.update(now)


def exposition() -> bytes:
    """The metrics in Prometheus text format: this process's, or every worker's added up."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
