"""A loaded model together with the workers that serve it."""

from __future__ import annotations

from dataclasses import dataclass

from service.inference.batching import AdaptiveBatcher, BatchObserver
from service.inference.classifier import Classifier
from service.inference.decoder import ImageDecoder
from service.settings import Settings


@dataclass(frozen=True)
class Runtime:
    """What a ready service holds: the classifier, the image decoder and the batcher."""

    classifier: Classifier
    decoder: ImageDecoder
    batcher: AdaptiveBatcher

    @classmethod
    def start(
        cls, classifier: Classifier, settings: Settings, observer: BatchObserver | None = None
    ) -> Runtime:
        """Create the worker pools and the batching loop for ``classifier``.

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
            classifier.image_size, settings.max_image_pixels, settings.decode_threads
        )
        return cls(classifier=classifier, decoder=decoder, batcher=batcher)

    async def close(self) -> None:
        """Answer what is queued, then stop the batcher and the decoding threads."""
        await self.batcher.close()
        self.decoder.close()
