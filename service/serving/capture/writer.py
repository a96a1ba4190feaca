"""Captured traffic: a sample of requests written as a training manifest, off the request path.

The request path only draws (``random() < rate``) and hands the pairs with their answer to
a queue bounded in bytes; when the queue is full the pairs are dropped and counted, never
waited for. One background thread per worker turns them into image files and JSON Lines
rows (:mod:`service.serving.capture.segments`). A row::

    {"text": "...", "label": "", "predicted": "cat", "probabilities": {"cat": 0.9, ...},
     "model": "demo", "version": 3, "request_id": "...", "item": 0,
     "time": "2025-01-01T12:00:00.123+00:00", "image": "images/<segment>/000001.png"}

Only the image bytes, the text and the answer are written: no header, API key or client
address. ``label`` is left empty for a person to fill in; the trainer reads ``image``,
``text`` and ``label`` and ignores the rest.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from service.preprocessing import FILE_EXTENSIONS, image_format
from service.serving.capture.segments import BudgetExceeded, SegmentStore
from service.serving.metrics import CAPTURE_BYTES, CAPTURE_DROPPED, CAPTURE_PRUNED, CAPTURE_WRITTEN

log = logging.getLogger("mmserve.capture")


@dataclass(frozen=True)
class Capture:
    """One sampled request: its complete pairs and the version's answer to each."""

    model: str
    version: int
    labels: Sequence[str]
    request_id: str | None
    time: float  # seconds since the epoch, when the answer was known
    pairs: Sequence[tuple[bytes, str, int]]  # image, text, the pair's index in the request
    probabilities: np.ndarray  # [N, C], the request's whole answer

    @property
    def size(self) -> int:
        """Bytes the capture holds (images and texts)."""
        return sum(len(image) + len(text) for image, text, _ in self.pairs)


_STOP = object()


class CaptureWriter:
    """Samples requests and writes them on its own thread; see the module's docstring."""

    def __init__(
        self,
        folder: Path,
        rate: float,
        max_bytes: int,
        segment_s: float,
        queue_bytes: int,
        worker: int = 0,
        workers: int = 1,
    ) -> None:
        self.rate = rate
        self.queue_bytes = queue_bytes
        self.store = SegmentStore(folder, max_bytes, segment_s, worker, workers)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mmserve-capture", daemon=True)
        self._failing = False

    def start(self) -> None:
        """Take over the folder (raises OSError when it is unusable) and start writing."""
        self.store.adopt()
        CAPTURE_BYTES.set(self.store.used)
        self._thread.start()

    def close(self, timeout: float) -> None:
        """Write what is queued, close the open segment and stop (blocks; at most about
        ``timeout`` seconds)."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the capture writer did not finish within %gs", timeout)

    def sampled(self) -> bool:
        """Whether to capture the current request (drawn at random at the rate)."""
        return random.random() < self.rate

    def submit(
        self,
        model: str,
        version: int,
        labels: Sequence[str],
        request_id: str | None,
        pairs: Sequence[tuple[bytes | None, str | None]],
        probabilities: np.ndarray,
    ) -> None:
        """Queue a sampled request's pairs with the answer, or drop and count them; never
        blocks. A pair without image or text is dropped (reason ``incomplete``)."""
        complete = [
            (image, text, index)
            for index, (image, text) in enumerate(pairs)
            if image is not None and text is not None
        ]
        if len(complete) < len(pairs):
            CAPTURE_DROPPED.labels("incomplete").inc(len(pairs) - len(complete))
        if not complete:
            return
        capture = Capture(model, version, labels, request_id, time.time(), complete, probabilities)
        size = capture.size
        with self._lock:
            if self._pending + size > self.queue_bytes:
                full = True
            else:
                full = False
                self._pending += size
        if full:
            CAPTURE_DROPPED.labels("queue_full").inc(len(complete))
            return
        self._queue.put(capture)

    def _run(self) -> None:
        store = self.store
        while True:
            try:
                left = store.seconds_left()
                job = self._queue.get(timeout=None if left is None else max(0.0, left))
            except queue.Empty:
                self._guarded(store.close_if_old)
                continue
            if job is _STOP:
                self._guarded(store.close_open)
                return
            assert isinstance(job, Capture)
            self._write(job)
            with self._lock:
                self._pending -= job.size
            self._guarded(store.close_if_old)

    def _write(self, capture: Capture) -> None:
        when = datetime.fromtimestamp(capture.time, UTC).isoformat(timespec="milliseconds")
        for image, text, index in capture.pairs:
            answer = capture.probabilities[index].tolist()
            row = {
                "text": text,
                "label": "",
                "predicted": capture.labels[int(np.argmax(capture.probabilities[index]))],
                "probabilities": dict(zip(capture.labels, answer, strict=True)),
                "model": capture.model,
                "version": capture.version,
                "request_id": capture.request_id,
                "item": index,
                "time": when,
            }
            extension = FILE_EXTENSIONS.get(image_format(image) or "", "img")
            pruned = self.store.pruned
            try:
                self.store.write(image, extension, row)
            except BudgetExceeded:
                CAPTURE_DROPPED.labels("budget").inc()
            except OSError as exc:
                CAPTURE_DROPPED.labels("error").inc()
                self._failed(exc)
            else:
                self._failing = False
                CAPTURE_WRITTEN.inc()
            if self.store.pruned > pruned:
                CAPTURE_PRUNED.inc(self.store.pruned - pruned)
            CAPTURE_BYTES.set(self.store.used)

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a step that closes a segment; a disk error is logged, never raised."""
        try:
            step()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if not self._failing:  # once per run of failures, not once per pair
            log.warning("cannot write to the capture folder: %s", exc)
        self._failing = True
