"""Fit, evaluate, ablate and publish a fused image+text classifier."""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import PIL
import tensorflow as tf

from service import model_store
from service.preprocessing import (
    BLANK_IMAGE,
    BLANK_TEXT,
    GOLDEN_TOLERANCE,
    blank_image,
    golden_pixels,
    preprocess_image,
)
from service.training import baselines, distribute, evaluate, pipeline
from service.training.cluster import Role
from service.training.dataset import Dataset, Progress, load_dataset, read_manifest
from service.training.modeling import ModelConfig, build_model, unfreeze_top
from service.training.options import check_combination

DATA_MODES = ("auto", "memory", "stream")


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
    fine_tune_epochs: int = 0  # a second phase with the top of a frozen backbone unfrozen
    fine_tune_learning_rate: float = 1e-5
    fine_tune_layers: int | None = None  # None: the backbone's top block (FINE_TUNE_LAYERS)
    data_mode: str = "auto"  # auto | memory | stream (a prepared folder always streams)
    stream_above_mb: int = 1024  # auto streams when the decoded pixels would exceed this
    shuffle_buffer: int = pipeline.DEFAULT_SHUFFLE_BUFFER  # streamed examples shuffled
    shards_dir: Path | None = None  # where a streamed manifest is prepared (then removed)
    # none | mirrored (several devices of this machine) | multiworker (several machines,
    # from TF_CONFIG; only the chief publishes)
    distribute: str = "none"
    devices: tuple[str, ...] | None = None  # mirrored: these devices (default: every GPU)

    def to_metadata(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("data")
        out.pop("model_store")
        out.pop("name")
        out.pop("shards_dir")
        out["devices"] = list(self.devices) if self.devices else None
        out["model"]["image_size"] = list(self.model.image_size)
        return out


@dataclass(frozen=True)
class TrainResult:
    version: model_store.ModelVersion  # a non-chief worker's: the chief's number
    report: dict[str, Any]
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch, both phases


def predict(model: keras.Model, images: np.ndarray, texts: np.ndarray, batch: int) -> np.ndarray:
    """Class probabilities for in-memory examples (images uint8 or float32, 0..255)."""
    data = pipeline.from_memory(
        images, texts, np.zeros(len(images), np.int64), 1, batch, with_targets=False
    )
    return np.asarray(model.predict(data, verbose=0), dtype=np.float32)


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


def _fit_phase(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    config: TrainConfig,
    *,
    first_epoch: int,
    epochs: int,
) -> tuple[dict[str, list[float]], keras.callbacks.EarlyStopping]:
    """One fit with early stopping on validation loss, restoring the best weights."""
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        min_delta=config.min_delta,
        patience=config.patience,
        restore_best_weights=True,
    )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        initial_epoch=first_epoch,
        epochs=first_epoch + epochs,
        callbacks=[stop],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}, stop


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )


@dataclass
class _Fitted:
    history: dict[str, list[float]]
    best_epoch: int  # 0-based, over both phases: the weights kept
    fine_tune: dict[str, Any] | None


def _fit(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    config: TrainConfig,
    progress: Progress,
) -> _Fitted:
    """The frozen (or only) phase, then the optional fine-tune phase.

    The fine-tune phase is kept only when it lowers the best validation loss; otherwise the
    weights of the first phase are put back, so fine-tuning never makes the model worse on
    validation than the frozen model.
    """
    _compile(model, config.learning_rate)
    progress(
        f"training {model.count_params():,} parameters "
        f"({sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} trainable) "
        f"for up to {config.epochs} epochs"
    )
    history, stop = _fit_phase(model, train_ds, val_ds, config, first_epoch=0, epochs=config.epochs)
    best_epoch = int(stop.best_epoch)
    if not config.fine_tune_epochs:
        return _Fitted(history, best_epoch, None)
    first = len(history["loss"])
    frozen_best = float(stop.best)
    frozen_weights = model.get_weights()
    unfrozen = unfreeze_top(model, config.model.backbone, config.fine_tune_layers)
    _compile(model, config.fine_tune_learning_rate)
    progress(
        f"fine-tuning the top {len(unfrozen)} backbone layers ({unfrozen[0]} .. {unfrozen[-1]}) "
        f"at learning rate {config.fine_tune_learning_rate:g} for up to "
        f"{config.fine_tune_epochs} epochs"
    )
    more, tune_stop = _fit_phase(
        model, train_ds, val_ds, config, first_epoch=first, epochs=config.fine_tune_epochs
    )
    for key, values in more.items():
        history.setdefault(key, []).extend(values)
    kept = float(tune_stop.best) < frozen_best
    if kept:
        best_epoch = int(tune_stop.best_epoch)
    else:
        model.set_weights(frozen_weights)
        progress("fine-tuning did not lower the validation loss: the frozen model is kept")
    return _Fitted(
        history,
        best_epoch,
        {
            "first_epoch": first,
            "layers": unfrozen,
            "kept": kept,
            "val_loss_frozen": frozen_best,
            "val_loss_fine_tuned": float(tune_stop.best),
        },
    )


def _image_preprocessing(backbone: str) -> str:
    return {
        "small_cnn": "Rescaling(1/255)",
        "mobilenet_v3_small": "MobileNetV3 include_preprocessing: x/127.5 - 1",
        "efficientnet_b0": "EfficientNet Rescaling(1/255) + ImageNet Normalization",
        "vgg16": "caffe: RGB -> BGR minus the ImageNet means (a frozen 1x1 convolution)",
    }[backbone]


def _text_preprocessing(model: ModelConfig) -> dict[str, Any]:
    common = {"standardize": "lower_and_strip_punctuation", "vocab_size": model.vocab_size}
    if model.text_encoder == "ngrams":
        return {
            "in_graph": "TextVectorization n-gram bags",
            "char_ngrams": [2, model.char_ngrams] if model.char_ngrams else None,
            "word_ngrams": [1, model.word_ngrams] if model.word_ngrams else None,
            "weighting": model.ngram_weighting,
            **common,
        }
    return {
        "in_graph": "TextVectorization",
        "sequence_length": model.sequence_length,
        **common,
    }


def train(config: TrainConfig, progress: Progress = print) -> TrainResult:
    """Run the whole pipeline and publish a new version; nothing is published on failure.

    Under ``--distribute multiworker`` every worker runs this same pipeline, since fitting,
    evaluating and predicting the golden probabilities are collective operations that
    every worker must take part in; only the chief publishes. The others build the same
    artifact in a temporary folder, delete it, and return the version number the chief
    published, under their own ``--model-store`` (the chief's when the store is shared).
    """
    started = time.monotonic()
    model_store.validate_name(config.name)
    m = config.model
    check_combination(
        backbone=m.backbone,
        image_weights=m.image_weights,
        freeze_backbone=m.freeze_backbone,
        fine_tune_epochs=config.fine_tune_epochs,
        fine_tune_layers=config.fine_tune_layers,
        text_encoder=m.text_encoder,
    )
    # First: a multi-worker strategy must exist before TensorFlow runs anything.
    strategy = distribute.strategy(
        config.distribute, list(config.devices) if config.devices else None
    )
    with (
        _examples(config, progress, chief=distribute.role(strategy).chief) as ds,
        distribute.keras_workarounds(
            strategy is not None, multi_worker=distribute.is_multi_worker(strategy)
        ),
    ):
        return _train(config, ds, progress, started, strategy)


@contextlib.contextmanager
def _examples(config: TrainConfig, progress: Progress, *, chief: bool) -> Iterator[Dataset]:
    """The dataset in memory, or streamed from shards (prepared here, or given prepared).

    A non-chief worker prepares its shards in the system's temporary folder unless
    ``--shards-dir`` is given: it writes nothing into the model store.
    """
    from service.training import shards

    size = config.model.image_size
    if config.data_mode not in DATA_MODES:
        raise ValueError(f"unknown data mode {config.data_mode!r}; choose from {DATA_MODES}")
    if shards.is_prepared(config.data):
        if config.data_mode == "memory":
            raise ValueError(f"{config.data} is a prepared folder: it is always streamed")
        progress(f"streaming the prepared folder {config.data}")
        yield shards.load_prepared(config.data, size)
        return
    mode = config.data_mode
    if mode == "auto":
        rows = len(read_manifest(config.data))
        estimate = rows * size[0] * size[1] * 3
        mode = "stream" if estimate > config.stream_above_mb * 2**20 else "memory"
        progress(
            f"{rows} images at {size[0]}x{size[1]} take {estimate / 2**20:,.0f} MB decoded: "
            + ("streaming them from shards" if mode == "stream" else "keeping them in memory")
        )
    if mode == "memory":
        yield load_dataset(
            config.data, size, config.seed, progress, config.val_fraction, config.test_fraction
        )
        return
    parent = config.shards_dir or (config.model_store / ".shards" if chief else None)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{config.name}-", dir=parent))
    try:
        shards.prepare(
            config.data,
            folder,
            size,
            config.seed,
            progress,
            config.val_fraction,
            config.test_fraction,
        )
        yield shards.load_prepared(folder, size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _train(
    config: TrainConfig,
    ds: Dataset,
    progress: Progress,
    started: float,
    strategy: tf.distribute.Strategy | None,
) -> TrainResult:
    m = config.model
    size = m.image_size
    progress(
        "split: "
        + ", ".join(f"{s} {len(ds.indices(s))}" for s in ("train", "val", "test"))
        + f" ({ds.split_source}); classes: {', '.join(ds.labels)}"
    )
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        # CPU training is already bit-for-bit repeatable for a seed; GPU kernels are not.
        tf.config.experimental.enable_op_determinism()
    tr, te = ds.indices("train"), ds.indices("test")
    n = len(ds.labels)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    me = distribute.role(strategy)
    if strategy is not None:
        progress(f"training on {strategy.num_replicas_in_sync} replicas ({config.distribute})")
    if distribute.is_multi_worker(strategy):
        progress(
            f"this process is {me.describe()}: "
            + (
                "the chief, which publishes the version"
                if me.chief
                else "not the chief, so it publishes nothing (it builds the same artifact "
                "in a temporary folder, deleted afterwards)"
            )
        )
    model = build_model(m, n, ds.texts(tr), strategy.scope() if strategy else None)

    def batches(split: str, **kw: Any) -> tf.data.Dataset:
        if ds.images is None:
            assert ds.shards is not None
            return pipeline.from_shards(
                ds.shards[split],
                size,
                n,
                config.batch_size,
                shuffle_buffer=config.shuffle_buffer,
                **kw,
            )
        idx = ds.indices(split)
        return pipeline.from_memory(
            ds.images[idx], ds.texts(idx), ds.targets(idx), n, config.batch_size, **kw
        )

    def thumbs(idx: np.ndarray) -> np.ndarray:
        if ds.images is None:
            assert ds.thumbs is not None
            return np.asarray(ds.thumbs[idx])
        return baselines.thumbnails(ds.images[idx])

    def probabilities(**kw: Any) -> np.ndarray:
        out = model.predict(batches("test", with_targets=False, **kw), verbose=0)
        return np.asarray(out, dtype=np.float32)

    with scope:
        fitted = _fit(
            model,
            batches("train", shuffle_seed=config.seed, modality_dropout=config.modality_dropout),
            batches("val"),
            config,
            progress,
        )
        probs = probabilities()
        ablation = {
            "image_only": probabilities(blank="text"),
            "text_only": probabilities(blank="image"),
        }
    epochs_run = len(fitted.history["loss"])
    y_test = ds.targets(te)
    report = evaluate.report(y_test, probs, ds.labels, ablation)
    progress("fitting the baselines")
    base_metrics = baselines.fit_and_score(
        ds.texts(tr),
        thumbs(tr),
        ds.targets(tr),
        ds.texts(te),
        thumbs(te),
        y_test,
        n,
        config.seed,
    )

    with _store_for(me, config) as store, model_store.staging(store, config.name) as staged:
        model.save(staged / model_store.MODEL_FILE)
        golden = _golden(model, ds, config, staged / model_store.GOLDEN_DIR)
        model_store.write_json(
            staged / model_store.GOLDEN_DIR / model_store.GOLDEN_INDEX, golden.model_dump()
        )
        drift = _check_reload(staged, golden, size)
        if drift > GOLDEN_TOLERANCE:
            raise RuntimeError(f"the saved model.keras differs from training by {drift:.2e}")
        model.export(str(staged / model_store.SAVED_MODEL_DIR), verbose=False)
        model_store.write_json(
            staged / model_store.EVALUATION_FILE, {**report, "baselines": base_metrics}
        )
        evaluate.plot_confusion(
            report["confusion_matrix"]["matrix"], ds.labels, staged / model_store.CONFUSION_PLOT
        )
        evaluate.plot_curves(
            fitted.history,
            fitted.best_epoch,
            staged / model_store.CURVES_PLOT,
            fine_tune_from=fitted.fine_tune["first_epoch"] if fitted.fine_tune else None,
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
                    "in_graph": _image_preprocessing(m.backbone),
                    "blank": BLANK_IMAGE,
                },
                "text": {**_text_preprocessing(m), "blank": BLANK_TEXT},
            },
            metrics={
                "test": report["test"],
                "ablation": report["ablation"],
                "baselines": base_metrics,
            },
            training={
                **config.to_metadata(),
                "workers": me.workers,
                "epochs_run": epochs_run,
                "best_epoch": fitted.best_epoch + 1,
                "fine_tune": fitted.fine_tune,
                "history": fitted.history,
            },
            dataset={
                "fingerprint": ds.fingerprint,
                "manifest": str(config.data),
                "split": ds.split_source,
                "counts": ds.counts,
                "streamed": ds.images is None,
            },
            framework={
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "pillow": PIL.__version__,
                "python": platform.python_version(),
            },
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            plots={
                "confusion_matrix": model_store.CONFUSION_PLOT,
                "training_curves": model_store.CURVES_PLOT,
            },
        )
        model_store.write_json(staged / model_store.METADATA_FILE, metadata.model_dump(mode="json"))
        version = model_store.publish(store, config.name, staged) if me.chief else None
    if distribute.is_multi_worker(strategy):
        assert strategy is not None
        version = _agree_on_version(strategy, me, version, config, progress)
    assert version is not None
    elapsed = time.monotonic() - started
    progress(f"\n{evaluate.summary_table(report, base_metrics)}\n")
    if me.chief:
        progress(f"training curves: {version.path / model_store.CURVES_PLOT}")
        progress(
            f"published {config.name} version {version.version} at {version.path} "
            f"({epochs_run} epochs, best {fitted.best_epoch + 1}, {elapsed:.0f}s)"
        )
    else:
        progress(
            f"{me.describe()} published nothing: the chief published {config.name} version "
            f"{version.version} in its model store ({epochs_run} epochs, "
            f"best {fitted.best_epoch + 1}, {elapsed:.0f}s)"
        )
    return TrainResult(version, report, elapsed, fitted.history)


@contextlib.contextmanager
def _store_for(me: Role, config: TrainConfig) -> Iterator[Path]:
    """The chief's model store, or a temporary one that a non-chief worker deletes."""
    if me.chief:
        yield config.model_store
        return
    folder = Path(tempfile.mkdtemp(prefix=f"mmserve-{me.task_type}-{me.task_id}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _agree_on_version(
    strategy: tf.distribute.Strategy,
    me: Role,
    published: model_store.ModelVersion | None,
    config: TrainConfig,
    progress: Progress,
) -> model_store.ModelVersion:
    """Every worker waits here for the chief's version number (a collective operation).

    So no worker leaves while the chief still publishes, and a non-chief worker fails when
    the chief failed before publishing. A published version stays published: the chief
    only warns when a worker is gone by then.
    """
    mine = published.version if published is not None else 0
    try:
        number = distribute.agree(strategy, mine)
    except tf.errors.OpError as exc:
        if published is None:
            raise RuntimeError(
                f"{me.describe()}: the chief did not confirm a published version: {exc}"
            ) from exc
        progress(f"warning: a worker did not confirm the end of training: {exc}")
        return published
    if published is not None:
        return published
    if number < 1:
        raise RuntimeError(f"{me.describe()}: the chief published no version")
    return model_store.ModelVersion(
        name=config.name,
        version=number,
        path=config.model_store / config.name / str(number),
    )
