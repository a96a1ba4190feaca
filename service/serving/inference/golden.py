"""Proof at start-up that serving reproduces training.

The artifact stores a few inputs as files with the probabilities the trained model gave
them. Replaying them through the serving path (bytes -> shared preprocessing -> compiled
model) must give the same probabilities, or the service refuses to become ready.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import ArtifactError
from service.model_store import ModelVersion, load_golden
from service.preprocessing import GOLDEN_TOLERANCE, declared_blanks, golden_pixels
from service.serving.inference.classifier import Classifier


@dataclass(frozen=True)
class GoldenReport:
    examples: int
    max_abs_diff: float
    tolerance: float
    batch_sizes: tuple[int, ...] = ()
    """The batch sizes the examples were also replayed at, as one batch each."""


def verify_golden(
    classifier: Classifier, version: ModelVersion, tolerance: float = GOLDEN_TOLERANCE
) -> GoldenReport:
    """Replay the golden examples one by one, then as one batch at each of the
    classifier's ``compiled_batch_sizes`` (if it has any: one size per program it compiled;
    the examples repeated to fill each); raise :class:`ArtifactError` on any drift."""
    golden = load_golden(version.path)
    if not golden.examples:
        raise ArtifactError(f"{version.path}: the golden set is empty")
    # The blanks the service substitutes for a missing modality: the golden examples
    # without an image or a text prove them as well.
    blanks = declared_blanks(classifier.metadata.preprocessing, classifier.image_size)
    worst = 0.0
    inputs = []

    def check(i: int, probs: np.ndarray, batch: str = "") -> None:
        nonlocal worst
        ex = golden.examples[i]
        expected = np.asarray(ex.probabilities, dtype=np.float32)
        if probs.shape != expected.shape:
            raise ArtifactError(
                f"golden example {i} ({ex.image}, {ex.text!r}): {probs.shape[0]} probabilities"
                f", expected {expected.shape[0]}"
            )
        diff = float(np.abs(probs - expected).max())
        worst = max(worst, diff)
        if diff > tolerance:
            raise ArtifactError(
                f"golden example {i} ({ex.image}, {ex.text!r}){batch} differs from training by "
                f"{diff:.3e} (tolerance {tolerance:.0e}): serving does not reproduce training"
            )

    for i, ex in enumerate(golden.examples):
        try:
            pixels = golden_pixels(version.golden_dir, ex, classifier.image_size, blanks.image)
        except OSError as exc:
            raise ArtifactError(f"golden example {i}: cannot read {ex.image}: {exc}") from exc
        inputs.append(pixels)
        check(i, classifier.predict(pixels[None], [ex.text])[0])
    sizes: tuple[int, ...] = tuple(getattr(classifier, "compiled_batch_sizes", ()))
    for size in sizes:
        order = [k % len(inputs) for k in range(size)]
        probs = classifier.predict(
            np.stack([inputs[k] for k in order]), [golden.examples[k].text for k in order]
        )
        for row, k in enumerate(order):
            check(k, probs[row], f" in a batch of {size}")
    return GoldenReport(len(golden.examples), worst, tolerance, sizes)
