"""Proof at start-up that serving reproduces training.

The artifact stores a few inputs as files with the probabilities the trained model gave
them. Replaying them through the serving path (bytes -> shared preprocessing -> compiled
model) must give the same probabilities, or the service refuses to become ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import ArtifactError
from service.model_store import GoldenExample, ModelVersion, load_golden
from service.preprocessing import blank_image, preprocess_image
from service.serving.inference.classifier import Classifier


@dataclass(frozen=True)
class GoldenReport:
    examples: int
    max_abs_diff: float
    tolerance: float


def golden_pixels(folder: Path, example: GoldenExample, size: tuple[int, int]) -> np.ndarray:
    """The model's image input for a golden example: its file (in ``folder``) through the
    shared preprocessing, or the blank image for an example without one."""
    if example.image is None:
        return blank_image(size)
    return preprocess_image((folder / example.image).read_bytes(), size)


def verify_golden(
    classifier: Classifier, version: ModelVersion, tolerance: float = 1e-4
) -> GoldenReport:
    """Replay the golden examples one by one; raise :class:`ArtifactError` on any drift."""
    golden = load_golden(version.path)
    if not golden.examples:
        raise ArtifactError(f"{version.path}: the golden set is empty")
    worst = 0.0
    for i, ex in enumerate(golden.examples):
        try:
            pixels = golden_pixels(version.golden_dir, ex, classifier.image_size)
        except OSError as exc:
            raise ArtifactError(f"golden example {i}: cannot read {ex.image}: {exc}") from exc
        probs = classifier.predict(pixels[None], [ex.text])[0]
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
                f"golden example {i} ({ex.image}, {ex.text!r}) differs from training by "
                f"{diff:.3e} (tolerance {tolerance:.0e}): serving does not reproduce training"
            )
    return GoldenReport(len(golden.examples), worst, tolerance)
