"""Data larger than memory: a manifest -> sharded TFRecords of preprocessed pixels.

``prepare`` validates and splits the manifest exactly as the in-memory path does, then
decodes each image once through the service's own decode function and writes it, with
its text, label index and split, into TFRecord shards; the dataset fingerprint and the
baselines' thumbnails come out of the same pass. Memory stays flat: images are decoded
in chunks and written as they come. Layout of a prepared folder::

    dataset.json               image size, labels, split source, fingerprint, counts, shards
    rows.jsonl                 one row per example: line, image path, text, label, split
    thumbnails.npy             uint8 [N, 16*16*3]: the image baseline's input
    <split>-<k>.tfrecord       examples of one split, in manifest order

``load_prepared`` reads a folder back as a :class:`Dataset` whose images are streamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.errors import ServiceError
from service.preprocessing import decode_image
from service.training.baselines import THUMBNAIL_SIDE, thumbnails
from service.training.dataset import (
    SPLITS,
    Dataset,
    ManifestError,
    Progress,
    Row,
    _fail,
    assign_splits,
    fingerprint_update,
    read_manifest,
    split_counts,
    split_labels,
)

INDEX = "dataset.json"
ROWS = "rows.jsonl"
THUMBS = "thumbnails.npy"
FORMAT = 1
# Examples per shard: about 200 MB of 128x128 pixels, small enough to shuffle shard order.
SHARD_EXAMPLES = 4096
_CHUNK = 256  # images decoded at a time


def is_prepared(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / INDEX).is_file()


def prepare(
    manifest: Path,
    out: Path,
    image_size: tuple[int, int],
    seed: int,
    progress: Progress = print,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    shard_examples: int = SHARD_EXAMPLES,
) -> Path:
    """Write the prepared folder ``out`` (replaced if present); returns ``out``."""
    import tensorflow as tf

    from service.training.pipeline import example_record

    rows = read_manifest(manifest)
    splits, source = assign_splits(rows, seed, val_fraction, test_fraction)
    labels = split_labels(rows, splits)
    index = {name: i for i, name in enumerate(labels)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.tfrecord"):
        old.unlink()
    progress(f"manifest {manifest}: {len(rows)} rows; writing shards to {out}")
    thumbs = np.lib.format.open_memmap(
        out / THUMBS, mode="w+", dtype=np.uint8, shape=(len(rows), THUMBNAIL_SIDE**2 * 3)
    )
    digest = hashlib.sha256()
    problems: list[str] = []
    written: dict[str, list[str]] = {s: [] for s in SPLITS}
    in_shard: dict[str, int] = dict.fromkeys(SPLITS, 0)
    writers: dict[str, tf.io.TFRecordWriter] = {}

    def writer(split: str) -> tf.io.TFRecordWriter:
        if split not in writers or in_shard[split] >= shard_examples:
            if split in writers:
                writers[split].close()
            name = f"{split}-{len(written[split]):05d}.tfrecord"
            writers[split] = tf.io.TFRecordWriter(str(out / name))
            written[split].append(name)
            in_shard[split] = 0
        in_shard[split] += 1
        return writers[split]

    def decode(i: int) -> tuple[str, np.ndarray | None, str | None]:
        row = rows[i]
        try:
            data = row.image.read_bytes()
            return hashlib.sha256(data).hexdigest(), decode_image(data, image_size), None
        except OSError as exc:
            return "", None, f"line {row.line}: cannot read image {row.image}: {exc}"
        except ServiceError as exc:
            return "", None, f"line {row.line}: unreadable image {row.image}: {exc.message}"

    started = time.monotonic()
    step = max(_CHUNK, (len(rows) // 10) // _CHUNK * _CHUNK)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for lo in range(0, len(rows), _CHUNK):
            hi = min(lo + _CHUNK, len(rows))
            for i, (sha, image, problem) in zip(
                range(lo, hi), pool.map(decode, range(lo, hi)), strict=True
            ):
                if problem or image is None:
                    problems.append(problem or f"line {rows[i].line}: no image")
                    continue
                row, split = rows[i], str(splits[i])
                fingerprint_update(digest, sha, row, split)
                thumbs[i] = thumbnails(image[None])[0]
                writer(split).write(example_record(image, row.text, index[row.label]))
            if hi % step == 0 or hi == len(rows):
                progress(f"prepared {hi}/{len(rows)} images ({time.monotonic() - started:.1f}s)")
    for w in writers.values():
        w.close()
    thumbs.flush()
    if problems:
        _fail(problems, f"{manifest} has images that cannot be used")
    with (out / ROWS).open("w", encoding="utf-8") as fh:
        for row, split in zip(rows, splits, strict=True):
            record = [row.line, str(row.image.resolve()), row.text, row.label, str(split)]
            fh.write(json.dumps(record) + "\n")
    meta = {
        "format": FORMAT,
        "manifest": str(manifest),
        "image_size": list(image_size),
        "labels": labels,
        "split": source,
        "fingerprint": digest.hexdigest(),
        "counts": split_counts(rows, splits),
        "shards": written,
    }
    (out / INDEX).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def load_prepared(folder: Path, image_size: tuple[int, int] | None = None) -> Dataset:
    """A prepared folder as a :class:`Dataset` whose pixels stay in the shards."""
    folder = Path(folder)
    meta = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ManifestError(f"{folder}: prepared with another format; prepare it again")
    size = (int(meta["image_size"][0]), int(meta["image_size"][1]))
    if image_size is not None and tuple(image_size) != size:
        raise ManifestError(
            f"{folder} holds {size[0]}x{size[1]} images; prepare it again for "
            f"{image_size[0]}x{image_size[1]} or train at {size[0]}x{size[1]}"
        )
    rows: list[Row] = []
    splits: list[str] = []
    with (folder / ROWS).open(encoding="utf-8") as fh:
        for raw in fh:
            line, image, text, label, split = json.loads(raw)
            rows.append(Row(int(line), Path(image), text, label, split))
            splits.append(split)
    return Dataset(
        rows=rows,
        images=None,
        splits=np.array(splits, dtype=object),
        labels=list(meta["labels"]),
        fingerprint=meta["fingerprint"],
        split_source=meta["split"],
        counts=meta["counts"],
        shards={s: [folder / name for name in meta["shards"][s]] for s in SPLITS},
        thumbs=np.load(folder / THUMBS, mmap_mode="r"),
    )
