"""Prometheus metrics (``prometheus-client``), exposed at ``GET /metrics``.

One process: the default registry. Several worker processes (``workers`` > 1): the
supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before starting them, every worker writes its
samples there, and a scrape answered by any worker adds up all of them (prometheus-client's
multiprocess mode): counters and histograms are summed, gauges as each says below.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.errors import ServiceUnavailable

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
REQUESTS_REFUSED = Counter(
    "mmserve_requests_refused",
    "Requests refused with 503 and Retry-After, by reason (draining; in_flight: "
    "max_in_flight requests being handled; queue_full: the model's queue, the requests on "
    "their way to it included; unavailable: a model version closed under the request) and "
    "stage (admission: before the body was read; handler: after it, the work done so far "
    "thrown away).",
    ("reason", "stage"),
)
# One child per label set, made now so that every series is exported (at 0) before the
# first refusal; then counting is a dict lookup.
_REFUSED: dict[tuple[str, str], Counter] = {
    (reason, stage): REQUESTS_REFUSED.labels(reason, stage)
    for reason in ("draining", "in_flight", "queue_full", "unavailable")
    for stage in ("admission", "handler")
}


def count_refusal(error: ServiceUnavailable, stage: Literal["admission", "handler"]) -> None:
    """Count a 503 refusal (``stage``: ``admission`` or ``handler``) under its error's
    ``refusal_reason``."""
    _REFUSED[error.refusal_reason, stage].inc()


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


# Drift signals: what the served versions see and answer, to compare with what they were
# trained on (the README has a PromQL example).
_PROBABILITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
TOP_PROBABILITY = Histogram(
    "mmserve_top_probability",
    "The highest class probability of each answered image+text pair, by model and version: "
    "a version growing less sure of its answers sees inputs unlike its training data.",
    ("model", "version"),
    buckets=_PROBABILITY_BUCKETS,
)
PREDICTED_CLASS = Counter(
    "mmserve_predicted_class",
    "Answered image+text pairs by model, version and predicted (most probable) label.",
    ("model", "version", "label"),
)
REQUEST_MODALITIES = Counter(
    "mmserve_request_modalities",
    "Answered pairs by model, version and the modalities the request sent for them: "
    "image+text, image or text.",
    ("model", "version", "modalities"),
)
REFERENCE_CLASS_FRACTION = Gauge(
    "mmserve_reference_class_fraction",
    "Each label's share of the version's test split (from metadata.json dataset.counts), "
    "set when the version is loaded: the class distribution to compare "
    "mmserve_predicted_class_total with. Versions served before stay listed.",
    ("model", "version", "label"),
    multiprocess_mode="livemax",
)


class DriftMetrics:
    """The drift signals of one served version, with their labelled children made once
    (this is every request's path)."""

    def __init__(
        self,
        model: str,
        version: int,
        labels: Sequence[str],
        reference: Mapping[str, int] | None = None,
    ) -> None:
        key = (model, str(version))
        self._top = TOP_PROBABILITY.labels(*key)
        self._classes = [PREDICTED_CLASS.labels(*key, label) for label in labels]
        self._modalities = {
            name: REQUEST_MODALITIES.labels(*key, name) for name in ("image+text", "image", "text")
        }
        total = sum(reference.values()) if reference else 0
        if reference and total > 0:
            for label in labels:
                REFERENCE_CLASS_FRACTION.labels(*key, label).set(reference.get(label, 0) / total)

    def observe(self, probabilities: np.ndarray, modalities: Iterable[str]) -> None:
        """Count one request's answers ``[N, C]`` and the modalities of its N pairs."""
        # Plain Python on lists. This runs on the event loop for every request, between
        # the decoding and model threads' turns on the same cores: there numpy's max and
        # argmax of one small row took 17-20 and 28-30 us of CPU (0.5-2 us each alone),
        # and the list with Python's max and index (histogram included) 9-10 us.
        classes: list[int] = []
        for row in probabilities.tolist():
            top = max(row)
            total = sum(row)
            if total == total:
                classes.append(row.index(top))
            else:  # a NaN (or both infinities): count it as numpy does, the first NaN wins
                array = np.asarray(row)
                top = float(array.max())
                classes.append(int(array.argmax()))
            self._top.observe(top)
        for index, count in collections.Counter(classes).items():
            self._classes[index].inc(count)
        for name, count in collections.Counter(modalities).items():
            self._modalities[name].inc(count)


CAPTURE_WRITTEN = Counter(
    "mmserve_capture_written", "Captured image+text pairs written to the capture folder."
)
CAPTURE_DROPPED = Counter(
    "mmserve_capture_dropped",
    "Sampled image+text pairs not captured, by reason: queue_full (the writer was behind; "
    "the request never waits for it), incomplete (a pair without image or text, which a "
    "training manifest cannot hold), budget (one pair larger than a worker's share of the "
    "disk budget), error (the disk refused the write; the log says why).",
    ("reason",),
)
CAPTURE_PRUNED = Counter(
    "mmserve_capture_pruned_segments",
    "Closed capture segments deleted, oldest first, to keep to the disk budget.",
)
CAPTURE_BYTES = Gauge(
    "mmserve_capture_bytes",
    "Bytes the capture folder's files take (in whole 4 KiB blocks). Summed over live workers.",
    multiprocess_mode="livesum",
)
