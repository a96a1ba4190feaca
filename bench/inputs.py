"""The fixed set of request inputs: distinct, realistically sized JPEGs with captions.

Every run of the benchmark sends the same bytes (the set is generated from a seed), so
figures from different runs and machines compare like with like.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.training.demo_data import COLOURS, SHAPES, _draw

DEFAULT_COUNT = 64
DEFAULT_SIDE = 256
JPEG_QUALITY = 90

_CAPTIONS = (
    "photo of a {c} object",
    "look at this {c} thing",
    "the item here is {c}",
    "something {c} in the picture",
)


@dataclass(frozen=True)
class Sample:
    """One request's inputs: an encoded JPEG and its caption."""

    filename: str
    image: bytes
    text: str


def generate(count: int = DEFAULT_COUNT, side: int = DEFAULT_SIDE, seed: int = 7) -> list[Sample]:
    """``count`` distinct ``side`` x ``side`` JPEGs (quality 90) with captions, from ``seed``."""
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    samples = []
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        colour = colours[int(rng.integers(len(colours)))]
        buffer = io.BytesIO()
        _draw(rng, shape, colour, side).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        caption = _CAPTIONS[i % len(_CAPTIONS)].format(c=colour)
        samples.append(Sample(f"bench-{i:03d}.jpg", buffer.getvalue(), caption))
    return samples


def save(samples: list[Sample], folder: Path) -> None:
    """Write the images to ``folder`` so a run's exact inputs can be inspected."""
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        (folder / sample.filename).write_bytes(sample.image)


def mean_bytes(samples: list[Sample]) -> float:
    """Mean encoded size of the images, in bytes."""
    return float(np.mean([len(s.image) for s in samples])) if samples else 0.0
