"""A loaded model together with the workers that serve it."""

from __future__ import annotations

from dataclasses import dataclass

from service.inference.classifier import Classifier
from service.inference.decoder import ImageDecoder
from service.inference.runner import InferenceRunner


@dataclass(frozen=True)
class Runtime:
    """What a ready service holds: the classifier, the image decoder and the model runner."""

    classifier: Classifier
    decoder: ImageDecoder
    runner: InferenceRunner

    @classmethod
    def start(cls, classifier: Classifier, *, decode_threads: int, max_pixels: int) -> Runtime:
        """Create the worker pools for ``classifier``."""
        return cls(
            classifier=classifier,
            decoder=ImageDecoder(classifier.image_size, max_pixels, decode_threads),
            runner=InferenceRunner(classifier),
        )

    def close(self) -> None:
        """Stop the worker pools, letting calls in progress finish."""
        self.runner.close()
        self.decoder.close()
