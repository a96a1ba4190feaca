"""A loaded model together with the workers that serve it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.serving.inference.batching import AdaptiveBatcher, BatchObserver
from service.serving.inference.classifier import Classifier
from service.serving.inference.decoder import ImageDecoder
from service.serving.settings import Settings

if TYPE_CHECKING:  # given by the app; the model runtime itself neither counts nor writes
    from service.serving.capture import CaptureWriter
    from service.serving.metrics import DriftMetrics

log = logging.getLogger("mmserve.runtime")


class InFlight:
    """Counts the requests using a runtime, so that it is closed only after the last one.

    Touched only from the event loop, so a plain counter is enough.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        """Requests holding the runtime now."""
        return self._count

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Count one request for the duration of the ``with`` block."""
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request holds the runtime; False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True)
class Runtime:
    """What a ready service holds: the classifier, the image decoder and the batcher.

    A request takes the runtime once, at its start (:meth:`use`), and uses that one
    throughout, so a hot reload never mixes two versions inside one request.
    """

    classifier: Classifier
    decoder: ImageDecoder
    batcher: AdaptiveBatcher
    drift: DriftMetrics | None = None
    """The version's drift signals, told every answer."""
    capture: CaptureWriter | None = None
    """The process's capture writer, when traffic is captured."""
    in_flight: InFlight = field(default_factory=InFlight, compare=False, repr=False)

    @classmethod
    def start(
        cls,
        classifier: Classifier,
        settings: Settings,
        observer: BatchObserver | None = None,
        drift: DriftMetrics | None = None,
        capture: CaptureWriter | None = None,
    ) -> Runtime:
        """Create the worker pools and the batching loop for ``classifier``; ``drift`` and
        ``capture`` are told every answer (:func:`service.serving.dataplane.traffic.observe`).

        Must be called on the running event loop.
        """
        batcher = AdaptiveBatcher(
            classifier.predict,
            max_batch_size=settings.max_batch_size,
            max_batch_delay=settings.max_batch_delay_ms / 1000,
            max_queue_items=settings.max_queue_items,
            timeout=settings.request_timeout_s,
            observer=observer,
        )
        batcher.start()
        decoder = ImageDecoder(
            classifier.image_size,
            settings.max_image_pixels,
            settings.decode_threads,
            allowed_formats=frozenset(settings.allowed_image_formats),
        )
        return cls(
            classifier=classifier, decoder=decoder, batcher=batcher, drift=drift, capture=capture
        )

    @contextlib.contextmanager
    def use(self) -> Iterator[Runtime]:
        """Hold the runtime for one request: :meth:`retire` waits for every holder."""
        with self.in_flight.hold():
            yield self

    async def close(self) -> None:
        """Answer what is queued, then stop the batcher and the decoding threads."""
        await self.batcher.close()
        self.decoder.close()

    async def retire(self, timeout: float) -> None:
        """Close the runtime once the requests holding it have finished, or after
        ``timeout`` seconds (a stuck client must not keep an old model alive forever)."""
        if not await self.in_flight.wait_idle(timeout):
            log.warning(
                "%d requests still use %s version %d after %gs; closing it anyway",
                self.in_flight.count,
                self.classifier.name,
                self.classifier.version,
                timeout,
            )
        await self.close()
        log.info("closed %s version %d", self.classifier.name, self.classifier.version)
