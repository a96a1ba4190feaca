"""The one place the service runs the model: a forward pass off the event loop.

:class:`InferenceRunner` is the seam between HTTP and the model runtime; an adaptive batcher
can replace it without the API noticing, as long as it keeps ``predict`` and ``close``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.inference.classifier import Classifier


class InferenceRunner:
    """Runs ``classifier.predict`` on one dedicated worker thread, one call at a time."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmserve-predict")

    async def predict(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Probabilities [N, C] for float32 images [N, H, W, 3] (0..255) and N texts."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._classifier.predict, images, list(texts)
        )

    def close(self) -> None:
        """Finish the call in progress and stop the worker thread."""
        self._executor.shutdown(wait=True, cancel_futures=True)
