"""A deterministic demo dataset whose label needs BOTH modalities.

Each image shows one coloured shape (circle, square or triangle) on a light, noisy
background. Each caption names a colour but never the shape. The label is the shape
combined with whether the caption names the colour really in the image:
``circle_match``, ``circle_mismatch``, ... (6 classes).

So the image alone tells the shape but not whether the caption is honest (at best 1/2),
and the text alone tells neither (about 1/6); only the fused model can be right.
Everything is generated locally from a seed: no downloads.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
}
_NOUNS = ("object", "thing", "item", "figure", "blob", "mark")
_TEMPLATES = (
    "a {c} {n}",
    "a {c} {n} on a plain background",
    "look at this {c} {n}",
    "the {n} here is {c}",
    "i think it is {c}",
    "mostly {c}, with a pale background",
    "something {c} in the picture",
    "photo of a {c} {n}",
    "{c}!",
    "this one looks {c} to me",
)
DEFAULT_COUNT = 3000
DEFAULT_IMAGE_SIDE = 96
_STAMP = "demo.json"


def _draw(rng: np.random.Generator, shape: str, colour: str, side: int) -> Image.Image:
    bg = rng.integers(215, 256, size=3)
    noise = rng.normal(0, 6, size=(side, side, 3))
    img = Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    fill = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[colour])
    r = int(rng.integers(side // 6, side // 3))
    cx = int(rng.integers(r, side - r))
    cy = int(rng.integers(r, side - r))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def generate(
    out: Path, count: int = DEFAULT_COUNT, seed: int = 0, side: int = DEFAULT_IMAGE_SIDE
) -> Path:
    """Write ``count`` examples (JPEG files and ``manifest.csv``) into ``out``.

    Deterministic for a seed. Returns the manifest path; reuses a previous generation in
    ``out`` made with the same parameters.
    """
    out = Path(out)
    params = {"count": count, "seed": seed, "side": side, "format": 2}
    manifest = out / "manifest.csv"
    stamp = out / _STAMP
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return manifest
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    rows = []
    for i in range(count):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = names[int(rng.integers(len(names)))]
        match = bool(rng.random() < 0.5)
        said = (
            colour
            if match
            else names[int(rng.choice([k for k, c in enumerate(names) if c != colour]))]
        )
        template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
        text = template.format(c=said, n=_NOUNS[int(rng.integers(len(_NOUNS)))])
        rel = f"images/{i:05d}.jpg"
        _draw(rng, shape, colour, side).save(out / rel, quality=90)
        rows.append((rel, text, f"{shape}_{'match' if match else 'mismatch'}"))
    tmp = manifest.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "text", "label"])
        writer.writerows(rows)
    tmp.replace(manifest)
    stamp.write_text(json.dumps(params))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the mmserve demo dataset.")
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(generate(args.out, args.count, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
