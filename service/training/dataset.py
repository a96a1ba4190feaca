"""Read and validate a manifest, decode its images once, and split it.

A manifest is CSV or JSON Lines with the columns ``image`` (or ``file_name``, the Hugging
Face imagefolder convention; a path relative to the manifest's folder, or absolute),
``text``, ``label`` and optionally ``split`` (train / val / test). Everything is validated
before training starts and every problem is reported with its line number.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.preprocessing import decode_image

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_MAX_REPORTED = 20

Progress = Callable[[str], None]


class ManifestError(ValueError):
    """The manifest or its images cannot be used; the message names every problem."""


@dataclass(frozen=True)
class Row:
    line: int
    image: Path
    text: str
    label: str
    split: str | None


@dataclass
class Dataset:
    """Decoded examples with their split assignment."""

    rows: list[Row]
    images: np.ndarray | None  # uint8 [N, H, W, 3] as preprocessing gives; None: streamed
    splits: np.ndarray  # str [N]: train / val / test
    labels: list[str]  # class names in output order
    fingerprint: str
    split_source: str  # "manifest" or "stratified(seed=...)"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    shards: dict[str, list[Path]] | None = None  # per split, when streamed
    thumbs: np.ndarray | None = None  # uint8 [N, D] baseline thumbnails, when streamed

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def texts(self, idx: np.ndarray) -> np.ndarray:
        return np.array([self.rows[i].text for i in idx], dtype=object)

    def targets(self, idx: np.ndarray) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.labels)}
        return np.array([index[self.rows[i].label] for i in idx], dtype=np.int64)


def _fail(problems: list[str], what: str) -> None:
    shown = problems[:_MAX_REPORTED]
    more = len(problems) - len(shown)
    lines = "\n".join(f"  - {p}" for p in shown)
    tail = f"\n  ... and {more} more" if more else ""
    raise ManifestError(f"{what} ({len(problems)} problem(s)):\n{lines}{tail}")


def _records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, object]]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            return columns, [(reader.line_num, dict(r)) for r in reader]
    if suffix in {".jsonl", ".ndjson", ".json"}:
        records: list[tuple[int, dict[str, object]]] = []
        keys: list[str] = []
        problems: list[str] = []
        with path.open(encoding="utf-8-sig") as fh:
            for n, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    problems.append(f"line {n}: not valid JSON ({exc.msg})")
                    continue
                if not isinstance(obj, dict):
                    problems.append(f"line {n}: expected a JSON object, got {type(obj).__name__}")
                    continue
                keys.extend(k for k in obj if k not in keys)
                records.append((n, obj))
        if problems:
            _fail(problems, f"{path} is not valid JSON Lines")
        return keys, records
    raise ManifestError(f"{path}: unknown manifest format {suffix!r}; use .csv or .jsonl")


def read_manifest(path: Path) -> list[Row]:
    """Parse and validate a manifest; raises :class:`ManifestError` naming every bad row."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    columns, records = _records(path)
    image_col = "image" if "image" in columns else "file_name" if "file_name" in columns else None
    missing = [
        c
        for c, ok in (
            ("image", image_col),
            ("text", "text" in columns),
            ("label", "label" in columns),
        )
        if not ok
    ]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns) or 'none'}); a manifest needs image (or file_name), "
            "text and label, and optionally split"
        )
    assert image_col is not None
    has_split = "split" in columns
    base = path.parent
    rows: list[Row] = []
    problems: list[str] = []
    for line, rec in records:
        image = str(rec.get(image_col) or "").strip()
        text = rec.get("text")
        text = "" if text is None else str(text)
        label = str(rec.get("label") if rec.get("label") is not None else "").strip()
        split: str | None = None
        if not image:
            problems.append(f"line {line}: empty {image_col}")
        if not text.strip():
            problems.append(f"line {line}: empty text")
        if not label:
            problems.append(f"line {line}: empty label")
        if has_split:
            raw_split = str(rec.get("split") or "").strip().lower()
            split = _SPLIT_ALIASES.get(raw_split)
            if split is None:
                problems.append(
                    f"line {line}: unknown split {raw_split!r} (use train, val or test)"
                )
        image_path = Path(image) if Path(image).is_absolute() else base / image
        if image and not image_path.is_file():
            problems.append(f"line {line}: image not found: {image_path}")
        rows.append(Row(line, image_path, text, label, split))
    if not rows:
        problems.append("the manifest has no rows")
    if problems:
        _fail(problems, f"{path} is not a usable manifest")
    return rows


def assign_splits(
    rows: list[Row], seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> tuple[np.ndarray, str]:
    """The manifest's own split column, or a stratified train/val/test split from ``seed``."""
    if all(r.split is not None for r in rows):
        splits = np.array([r.split for r in rows], dtype=object)
        problems = [f"the {s} split is empty" for s in SPLITS if not np.any(splits == s)]
        train_labels = {r.label for r in rows if r.split == "train"}
        for r in rows:
            if r.split != "train" and r.label not in train_labels:
                problems.append(
                    f"line {r.line}: label {r.label!r} appears in {r.split} but not in train"
                )
        if problems:
            _fail(problems, "the manifest's split column cannot be used")
        return splits, "manifest"
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_label[r.label].append(i)
    small = [
        f"class {label!r} has {len(idx)} example(s); at least 3 are needed to split it into "
        "train, val and test"
        for label, idx in sorted(by_label.items())
        if len(idx) < 3
    ]
    if small:
        _fail(small, "some classes are too small to split")
    rng = np.random.default_rng(seed)
    splits = np.empty(len(rows), dtype=object)
    for _label, idx in sorted(by_label.items()):
        order = rng.permutation(np.array(idx))
        n_test = max(1, round(len(order) * test_fraction))
        n_val = max(1, round(len(order) * val_fraction))
        splits[order[:n_test]] = "test"
        splits[order[n_test : n_test + n_val]] = "val"
        splits[order[n_test + n_val :]] = "train"
    return splits, f"stratified(seed={seed}, val={val_fraction}, test={test_fraction})"


def _decode_all(
    rows: list[Row], size: tuple[int, int], progress: Progress
) -> tuple[np.ndarray, list[str], list[str]]:
    images = np.zeros((len(rows), size[0], size[1], 3), dtype=np.uint8)
    digests: list[str] = [""] * len(rows)
    problems: list[str] = []
    done = 0
    started = time.monotonic()
    step = max(1, len(rows) // 10)

    def work(i: int) -> tuple[int, str | None]:
        row = rows[i]
        try:
            data = row.image.read_bytes()
            digests[i] = hashlib.sha256(data).hexdigest()
            images[i] = decode_image(data, size)
        except OSError as exc:
            return i, f"line {row.line}: cannot read image {row.image}: {exc.strerror or exc}"
        except ServiceError as exc:
            return i, f"line {row.line}: unreadable image {row.image}: {exc.message}"
        return i, None

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _i, problem in pool.map(work, range(len(rows))):
            done += 1
            if problem:
                problems.append(problem)
            if done % step == 0 or done == len(rows):
                progress(f"decoded {done}/{len(rows)} images ({time.monotonic() - started:.1f}s)")
    return images, digests, problems


def split_labels(rows: list[Row], splits: np.ndarray) -> list[str]:
    """Class names in output order: the labels of the training split, sorted."""
    return sorted({r.label for r, s in zip(rows, splits, strict=True) if s == "train"})


def split_counts(rows: list[Row], splits: np.ndarray) -> dict[str, dict[str, int]]:
    return {
        s: dict(
            sorted(Counter(r.label for r, x in zip(rows, splits, strict=True) if x == s).items())
        )
        for s in SPLITS
    }


def fingerprint_update(h: Any, digest: str, row: Row, split: str) -> None:
    """Add one example (image bytes' digest, text, label, split) to the dataset hash."""
    h.update(json.dumps([digest, row.text, row.label, split]).encode())


def load_dataset(
    path: Path,
    image_size: tuple[int, int],
    seed: int,
    progress: Progress = print,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Dataset:
    """Validate the manifest, split it, and decode every image once through preprocessing."""
    rows = read_manifest(path)
    splits, source = assign_splits(rows, seed, val_fraction, test_fraction)
    progress(f"manifest {path}: {len(rows)} rows, {len({r.label for r in rows})} classes")
    images, digests, problems = _decode_all(rows, image_size, progress)
    if problems:
        _fail(problems, f"{path} has images that cannot be used")
    h = hashlib.sha256()
    for row, digest, split in zip(rows, digests, splits, strict=True):
        fingerprint_update(h, digest, row, split)
    labels = split_labels(rows, splits)
    return Dataset(rows, images, splits, labels, h.hexdigest(), source, split_counts(rows, splits))
