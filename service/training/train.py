"""Fit, evaluate, ablate and publish a fused image+text classifier."""

from __future__ import annotations

import datetime as dt
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import PIL
import tensorflow as tf

from service import model_store
from service.inference.golden import golden_pixels
from service.inference.preprocessing import BLANK_TEXT, blank_image, preprocess_image
from service.training import evaluate
from service.training.dataset import Dataset, Progress, load_dataset
from service.training.modeling import ModelConfig, build_model

GOLDEN_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """One training run; stored (minus paths) in the artifact's metadata."""

    data: Path
    name: str
    model_store: Path = Path("model_store")
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 4
    min_delta: float = 1e-3  # a smaller fall in validation loss is not an improvement
    seed: int = 42
    modality_dropout: float = 0.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    golden_count: int = 8
    deterministic: bool = False

    def to_metadata(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("data")
        out.pop("model_store")
        out.pop("name")
        out["model"]["image_size"] = list(self.model.image_size)
        return out


@dataclass(frozen=True)
class TrainResult:
    version: model_store.ModelVersion
    report: dict[str, Any]
    seconds: float


def _batches(
    images: np.ndarray,
    texts: np.ndarray,
    targets: np.ndarray | None,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    modality_dropout: float = 0.0,
) -> tf.data.Dataset:
    """Examples as a tf.data pipeline; images stay uint8 in memory and are cast per batch."""
    features = {"image": images, "text": np.asarray(texts, dtype=object).reshape(-1, 1)}
    ds = tf.data.Dataset.from_tensor_slices(features if targets is None else (features, targets))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).enumerate()
    seed = 0 if shuffle_seed is None else shuffle_seed

    def prepare(step: tf.Tensor, batch: Any) -> Any:
        x, y = batch if targets is not None else (batch, None)
        image = tf.cast(x["image"], tf.float32)
        text = x["text"]
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
        out = {"image": image, "text": text}
        return out if y is None else (out, y)

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict(model: keras.Model, images: np.ndarray, texts: np.ndarray, batch: int) -> np.ndarray:
    """Class probabilities for in-memory examples (images uint8 or float32, 0..255)."""
    out = model.predict(_batches(images, texts, None, batch), verbose=0)
    return np.asarray(out, dtype=np.float32)


def _golden(
    model: keras.Model, ds: Dataset, config: TrainConfig, folder: Path
) -> model_store.GoldenSet:
    """Copy a few test inputs into the artifact with the probabilities the model gives them.

    One example per class first, then one image-only (blank text) and one text-only (no
    image) example, so the server can prove every input path reproduces training.
    """
    test = ds.indices("test")
    chosen: list[int] = []
    for label in ds.labels:
        hit = next((i for i in test if ds.rows[i].label == label), None)
        if hit is not None and len(chosen) < config.golden_count:
            chosen.append(int(hit))
    folder.mkdir(parents=True, exist_ok=True)
    size = config.model.image_size
    entries: list[tuple[str | None, str, str]] = []
    pixels: list[np.ndarray] = []
    for k, i in enumerate(chosen):
        row = ds.rows[i]
        file = f"{k:02d}{row.image.suffix.lower()}"
        data = row.image.read_bytes()
        (folder / file).write_bytes(data)
        entries.append((file, row.text, row.label))
        pixels.append(preprocess_image(data, size))
    first = ds.rows[chosen[0]]
    entries.append((entries[0][0], BLANK_TEXT, first.label))
    pixels.append(pixels[0])
    entries.append((None, first.text, first.label))
    pixels.append(blank_image(size))
    texts = np.array([t for _, t, _ in entries], dtype=object)
    probs = predict(model, np.stack(pixels), texts, batch=len(entries))
    return model_store.GoldenSet(
        examples=[
            model_store.GoldenExample(image=f, text=t, label=lab, probabilities=p.tolist())
            for (f, t, lab), p in zip(entries, probs, strict=True)
        ]
    )


def _check_reload(folder: Path, golden: model_store.GoldenSet, size: tuple[int, int]) -> float:
    """Reload ``model.keras`` from disk and return its worst difference on the golden set."""
    reloaded = keras.saving.load_model(folder / model_store.MODEL_FILE)
    gdir = folder / model_store.GOLDEN_DIR
    pixels = np.stack([golden_pixels(gdir, ex, size) for ex in golden.examples])
    texts = np.array([ex.text for ex in golden.examples], dtype=object)
    probs = predict(reloaded, pixels, texts, batch=len(texts))
    expected = np.array([ex.probabilities for ex in golden.examples], dtype=np.float32)
    return float(np.abs(probs - expected).max())


def train(config: TrainConfig, progress: Progress = print) -> TrainResult:
    """Run the whole pipeline and publish a new version; nothing is published on failure."""
    started = time.monotonic()
    model_store.validate_name(config.name)
    size = config.model.image_size
    ds = load_dataset(
        config.data, size, config.seed, progress, config.val_fraction, config.test_fraction
    )
    progress(
        "split: "
        + ", ".join(f"{s} {len(ds.indices(s))}" for s in ("train", "val", "test"))
        + f" ({ds.split_source}); classes: {', '.join(ds.labels)}"
    )
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        # CPU training is already bit-for-bit repeatable for a seed; GPU kernels are not.
        tf.config.experimental.enable_op_determinism()
    tr, va, te = (ds.indices(s) for s in ("train", "val", "test"))
    n = len(ds.labels)
    onehot = np.eye(n, dtype=np.float32)
    model = build_model(config.model, n, ds.texts(tr))
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_ds = _batches(
        ds.images[tr],
        ds.texts(tr),
        onehot[ds.targets(tr)],
        config.batch_size,
        shuffle_seed=config.seed,
        modality_dropout=config.modality_dropout,
    )
    val_ds = _batches(ds.images[va], ds.texts(va), onehot[ds.targets(va)], config.batch_size)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        min_delta=config.min_delta,
        patience=config.patience,
        restore_best_weights=True,
    )
    progress(f"training {model.count_params():,} parameters for up to {config.epochs} epochs")
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=[stop],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    epochs_run = len(history.history["loss"])

    y_test = ds.targets(te)
    test_texts = ds.texts(te)
    probs = predict(model, ds.images[te], test_texts, config.batch_size)
    blank_texts = np.full(len(te), BLANK_TEXT, dtype=object)
    ablation = {
        "image_only": predict(model, ds.images[te], blank_texts, config.batch_size),
        "text_only": predict(model, np.zeros_like(ds.images[te]), test_texts, config.batch_size),
    }
    report = evaluate.report(y_test, probs, ds.labels, ablation)

    with model_store.staging(config.model_store, config.name) as staged:
        model.save(staged / model_store.MODEL_FILE)
        golden = _golden(model, ds, config, staged / model_store.GOLDEN_DIR)
        model_store.write_json(
            staged / model_store.GOLDEN_DIR / model_store.GOLDEN_INDEX, golden.model_dump()
        )
        drift = _check_reload(staged, golden, size)
        if drift > GOLDEN_TOLERANCE:
            raise RuntimeError(f"the saved model.keras differs from training by {drift:.2e}")
        model.export(str(staged / model_store.SAVED_MODEL_DIR), verbose=False)
        model_store.write_json(staged / model_store.EVALUATION_FILE, report)
        evaluate.plot_confusion(
            report["confusion_matrix"]["matrix"], ds.labels, staged / model_store.CONFUSION_PLOT
        )
        metadata = model_store.ModelMetadata(
            name=config.name,
            version=0,  # assigned by publish()
            labels=ds.labels,
            image_size=size,
            preprocessing={
                "image": {
                    "decode": "Pillow; EXIF orientation applied; alpha composited on white; "
                    "palette, greyscale, CMYK and 16-bit converted to 8-bit RGB",
                    "resize": "stretch to image_size, bilinear",
                    "dtype": "float32",
                    "range": [0, 255],
                    "blank": "all zeros",
                },
                "text": {
                    "in_graph": "TextVectorization",
                    "standardize": "lower_and_strip_punctuation",
                    "vocab_size": config.model.vocab_size,
                    "sequence_length": config.model.sequence_length,
                    "blank": BLANK_TEXT,
                },
            },
            metrics={"test": report["test"], "ablation": report["ablation"]},
            training={
                **config.to_metadata(),
                "epochs_run": epochs_run,
                "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            },
            dataset={
                "fingerprint": ds.fingerprint,
                "manifest": str(config.data),
                "split": ds.split_source,
                "counts": ds.counts,
            },
            framework={
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "pillow": PIL.__version__,
                "python": platform.python_version(),
            },
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        model_store.write_json(staged / model_store.METADATA_FILE, metadata.model_dump(mode="json"))
        version = model_store.publish(config.model_store, config.name, staged)
    elapsed = time.monotonic() - started
    progress(f"\n{evaluate.summary_table(report)}\n")
    progress(
        f"published {config.name} version {version.version} at {version.path} "
        f"({epochs_run} epochs, {elapsed:.0f}s)"
    )
    return TrainResult(version, report, elapsed)
