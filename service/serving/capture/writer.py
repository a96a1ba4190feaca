"""Captured traffic: a sample of requests written as a training manifest, off the request path.

The request path only draws (``random() < rate``) and hands the pairs with their answer to
a queue bounded in bytes; when the queue is full the pairs are dropped and counted, never
waited for. One background thread per worker wakes every ``TICK_S`` seconds and turns them
into image files and JSON Lines rows (:mod:`service.serving.capture.segments`). A row::

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
from pathlib import Path

import numpy as np

from service.preprocessing import FILE_EXTENSIONS, image_format
from service.serving.capture.segments import BudgetExceeded, SegmentStore
from service.serving.metrics import CAPTURE_BYTES, CAPTURE_DROPPED, CAPTURE_PRUNED, CAPTURE_WRITTEN
from service.timestamps import utc_millis

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


TICK_S = 0.1
"""How often the writer wakes to write what was queued since. Waking once per sampled
request cost the service more than the writing did (each wake takes the interpreter's lock
from the threads serving requests, and at c=32 on 2 cores that alone raised p99 by a fifth);
rows become readable only when their segment closes, so the delay costs nothing."""


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
        self._queue: queue.SimpleQueue[Capture] = queue.SimpleQueue()
        self._stopping = threading.Event()
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
        self._stopping.set()
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
            stopping = self._stopping.wait(TICK_S)
            written, pruned = 0, store.pruned
            for _ in range(self._queue.qsize()):  # what was queued by now, not what follows
                job = self._queue.get_nowait()
                written += self._write(job)
                with self._lock:
                    self._pending -= job.size
            if stopping:
                self._guarded(store.close_open)
            else:
                self._guarded(store.close_if_old)
            # The metrics once per wake, not per pair (each costs a few µs in multiprocess mode).
            if written:
                CAPTURE_WRITTEN.inc(written)
            if store.pruned > pruned:
                CAPTURE_PRUNED.inc(store.pruned - pruned)
            CAPTURE_BYTES.set(store.used)
            if stopping:
                return

    def _write(self, capture: Capture) -> int:
        """Write a capture's pairs; returns how many were written."""
        when = utc_millis(capture.time)
        written = 0
        for image, text, index in capture.pairs:
            answer = capture.probabilities[index].tolist()
            row = {
                "text": text,
                "label": "",
                "predicted": capture.labels[answer.index(max(answer))],
                "probabilities": dict(zip(capture.labels, answer, strict=True)),
                "model": capture.model,
                "version": capture.version,
                "request_id": capture.request_id,
                "item": index,
                "time": when,
            }
            extension = FILE_EXTENSIONS.get(image_format(image) or "", "img")
            try:
                self.store.write(image, extension, row)
            except BudgetExceeded:
                CAPTURE_DROPPED.labels("budget").inc()
            except OSError as exc:
                CAPTURE_DROPPED.labels("error").inc()
                self._failed(exc)
            else:
                self._failing = False
                written += 1
        return written

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
