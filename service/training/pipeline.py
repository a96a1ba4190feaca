"""Examples as tf.data pipelines: the same batches from memory or from TFRecord shards.

Pixels stay uint8 until a batch is formed, then become the model's float32 0..255 input.
Modality dropout and the ablation's blanking happen per batch, in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from service.preprocessing import BLANK_TEXT

# Examples held by the streaming shuffle buffer: memory stays flat however large the data.
DEFAULT_SHUFFLE_BUFFER = 1024

_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "text": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def _finish(
    ds: tf.data.Dataset,
    num_classes: int,
    batch_size: int,
    *,
    seed: int,
    modality_dropout: float,
    blank: str | None,
    with_targets: bool,
) -> tf.data.Dataset:
    """(uint8 image, text [1], label) examples -> batches of model inputs (and one-hot)."""
    ds = ds.batch(batch_size).enumerate()

    def prepare(step: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> Any:
        image_u8, text, label = example
        image = tf.cast(image_u8, tf.float32)
        if blank == "image":
            image = tf.zeros_like(image)
        elif blank == "text":
            text = tf.fill(tf.shape(text), BLANK_TEXT)
        if modality_dropout > 0:
            # Per example: blank the image with probability p, else the text with p. The
            # draw is stateless, keyed by the batch's position, so that parallel map calls
            # cannot change which examples are blanked: a seed reproduces the run exactly.
            r = tf.random.stateless_uniform(
                [tf.shape(image)[0]], seed=tf.stack([tf.constant(seed, tf.int64), step])
            )
            drop_image = tf.reshape(r < modality_dropout, [-1, 1, 1, 1])
            drop_text = tf.reshape((r >= modality_dropout) & (r < 2 * modality_dropout), [-1, 1])
            image = tf.where(drop_image, tf.zeros_like(image), image)
            text = tf.where(drop_text, tf.fill(tf.shape(text), BLANK_TEXT), text)
        features = {"image": image, "text": text}
        if not with_targets:
            return features
        return features, tf.one_hot(label, num_classes)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    # Under a multi-worker strategy every worker runs this same pipeline and keeps its own
    # slice of each global batch, so the global batches are exactly those of one process
    # (and a run's loss history is the same). The default would shard a streamed dataset by
    # file instead: other batches, and nothing at all for a worker when there are fewer
    # shard files than workers.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def from_memory(
    images: np.ndarray,
    texts: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    modality_dropout: float = 0.0,
    blank: str | None = None,
    with_targets: bool = True,
) -> tf.data.Dataset:
    """Batches from in-memory uint8 images (or float32 0..255), texts and label indices."""
    ds = tf.data.Dataset.from_tensor_slices(
        (images, np.asarray(texts, dtype=object).reshape(-1, 1), np.asarray(labels, np.int64))
    )
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    return _finish(
        ds,
        num_classes,
        batch_size,
        seed=0 if shuffle_seed is None else shuffle_seed,
        modality_dropout=modality_dropout,
        blank=blank,
        with_targets=with_targets,
    )


def from_shards(
    files: Sequence[Path],
    image_size: tuple[int, int],
    num_classes: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    modality_dropout: float = 0.0,
    blank: str | None = None,
    with_targets: bool = True,
) -> tf.data.Dataset:
    """Batches streamed from TFRecord shards written by :mod:`service.training.shards`.

    Without a shuffle seed the examples come in the order they were written (manifest
    order), so predictions line up with the split's rows.
    """
    h, w = image_size
    names = [str(f) for f in files]
    if shuffle_seed is not None:
        # Shard order and example order both shuffle from the seed, every epoch anew.
        ds = tf.data.Dataset.from_tensor_slices(names).shuffle(
            len(names), seed=shuffle_seed, reshuffle_each_iteration=True
        )
        ds = ds.interleave(
            tf.data.TFRecordDataset, cycle_length=min(4, len(names)), deterministic=True
        )
    else:
        ds = tf.data.TFRecordDataset(names)

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        ex = tf.io.parse_single_example(record, _FEATURES)
        image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [h, w, 3])
        return image, tf.reshape(ex["text"], [1]), ex["label"]

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle_seed is not None:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    return _finish(
        ds,
        num_classes,
        batch_size,
        seed=0 if shuffle_seed is None else shuffle_seed,
        modality_dropout=modality_dropout,
        blank=blank,
        with_targets=with_targets,
    )


def example_record(image: np.ndarray, text: str, label: int) -> bytes:
    """One serialised example as the shards hold it: raw uint8 pixels, text, label index."""
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return bytes(example.SerializeToString())
