"""``mmserve-train``: manifest (or the demo set) -> versioned model artifact."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from service.training.demo_data import DEFAULT_COUNT


def _image_size(value: str) -> tuple[int, int]:
    parts = value.lower().replace("x", ",").split(",")
    try:
        dims = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {value!r}") from None
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) < 32 or max(dims) > 1024:
        raise argparse.ArgumentTypeError("image size must be N or HxW with 32 <= N <= 1024")
    return dims[0], dims[1]


def build_parser() -> argparse.ArgumentParser:
    from service.training.options import (
        BACKBONES,
        DEFAULT_TEXT_ENCODER,
        FUSIONS,
        NGRAM_WEIGHTINGS,
        PRESETS,
        TEXT_ENCODERS,
    )

    p = argparse.ArgumentParser(
        prog="mmserve-train",
        description="Train a fused image+text classifier from a manifest (CSV or JSONL with "
        "image|file_name, text, label and optional split columns) and publish it as a new "
        "version in the model store.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data",
        type=Path,
        help="manifest file (.csv or .jsonl), or a folder made by 'mmserve-train prepare'",
    )
    src.add_argument("--demo", action="store_true", help="generate and train on the demo set")
    p.add_argument("--model-store", type=Path, default=Path("model_store"))
    p.add_argument(
        "--name", help="model name (default: 'demo' with --demo, else the manifest folder's name)"
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named model: 'seed' is the original design (ImageNet VGG16 frozen at "
        "224x224, Embedding + LSTM(128), concat, Dense(256)); options it fixes cannot be "
        "changed, except --image-weights PATH for a local copy of the same weights",
    )
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs (default 30)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument(
        "--patience",
        type=int,
        default=4,
        help="early-stopping patience on validation loss (default 4)",
    )
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        help="model input N or HxW (default 64 with --demo, else 128)",
    )
    p.add_argument("--backbone", choices=BACKBONES, default=None, help="default small_cnn")
    p.add_argument(
        "--image-weights",
        default=None,
        help="none (default) | imagenet (downloaded by Keras) | PATH to a weights file of "
        "the backbone, for the keras.applications backbones",
    )
    p.add_argument(
        "--freeze-backbone",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the head and the text side with the pretrained backbone frozen, its "
        "BatchNorm in inference mode (default: on whenever --image-weights is given)",
    )
    p.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=0,
        help="after the frozen phase, train this many more epochs with the top of the "
        "backbone unfrozen (BatchNorm stays in inference mode; default 0)",
    )
    p.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=1e-5,
        help="Adam learning rate of the fine-tune phase (default 1e-5)",
    )
    p.add_argument(
        "--fine-tune-layers",
        type=int,
        default=None,
        help="weighted backbone layers, from the top, that the fine-tune phase unfreezes "
        "(default: about the last block: vgg16 3, mobilenet_v3_small 8, efficientnet_b0 10)",
    )
    p.add_argument(
        "--text-encoder",
        choices=TEXT_ENCODERS,
        default=None,
        help=f"default {DEFAULT_TEXT_ENCODER}: ngrams "
        "(bags of character 2..4 and word 1..2 n-grams, then a dense layer), or an "
        "embedding with lstm, bilstm or gru",
    )
    p.add_argument(
        "--ngram-weighting",
        choices=NGRAM_WEIGHTINGS,
        default="count",
        help="how the ngrams encoder weighs its n-grams (default count; tf_idf gives rare "
        "n-grams of a small training set large weights that the model overfits first)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=20000,
        help="most distinct tokens the text vocabulary keeps (default 20000)",
    )
    p.add_argument(
        "--sequence-length",
        type=int,
        default=32,
        help="tokens per text; longer texts are truncated (default 32)",
    )
    p.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help="how image and text features meet (default bilinear with --demo, "
        "whose label depends on how the two agree; else concat)",
    )
    p.add_argument(
        "--modality-dropout",
        type=float,
        default=0.0,
        help="per-example probability of blanking each modality in training, so "
        "image-only and text-only requests work (default 0)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--distribute",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="mirrored: train on every GPU of this machine with MirroredStrategy; "
        "multiworker: train on the machines TF_CONFIG names with "
        "MultiWorkerMirroredStrategy, only the chief publishing (--batch-size is the "
        "global batch, split between all replicas)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="multiworker in a Kubernetes Indexed Job: build TF_CONFIG for this many "
        "workers from JOB_COMPLETION_INDEX instead of reading it (needs --worker-address)",
    )
    p.add_argument(
        "--worker-address",
        default=None,
        help="with --workers: host:port of worker {index}, e.g. "
        "'mmserve-train-{index}.mmserve-train:2222' (the pods of an Indexed Job under a "
        "headless Service)",
    )
    p.add_argument(
        "--data-mode",
        choices=("auto", "memory", "stream"),
        default="auto",
        help="keep decoded images in memory, or stream them from TFRecord shards prepared "
        "first (auto: stream when they would take more than --stream-above-mb)",
    )
    p.add_argument(
        "--stream-above-mb",
        type=int,
        default=1024,
        help="decoded-pixel size above which auto streams (default 1024)",
    )
    p.add_argument(
        "--shuffle-buffer",
        type=int,
        default=1024,
        help="examples in the streaming shuffle buffer (default 1024)",
    )
    p.add_argument(
        "--shards-dir",
        type=Path,
        default=None,
        help="where a streamed manifest is prepared, removed after training "
        "(default MODEL_STORE/.shards; a non-chief worker's: the temporary folder)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="force deterministic TensorFlow ops (slower; needed for repeatable "
        "GPU training, CPU training repeats for a seed without it)",
    )
    p.add_argument(
        "--demo-dir",
        type=Path,
        default=Path("data/demo"),
        help="where --demo writes its images and manifest (default data/demo)",
    )
    p.add_argument("--demo-count", type=int, default=DEFAULT_COUNT)
    return p


def _prepared_size(data: Path | None) -> tuple[int, int] | None:
    """The image size a prepared folder was written at (None for a manifest)."""
    index = data / "dataset.json" if data is not None else None
    if index is None or not index.is_file():
        return None
    h, w = json.loads(index.read_text(encoding="utf-8"))["image_size"]
    return int(h), int(w)


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The preset, then the demo's and the general defaults, then the consistency rules."""
    from service.training.options import (
        DEFAULT_TEXT_ENCODER,
        apply_preset,
        check_combination,
    )

    chosen = {
        "backbone": args.backbone,
        "image_weights": args.image_weights,
        "freeze_backbone": args.freeze_backbone,
        "image_size": args.image_size,
        "text_encoder": args.text_encoder,
        "fusion": args.fusion,
    }
    out = apply_preset(args.preset, chosen)
    defaults = {
        "backbone": "small_cnn",
        "image_weights": "none",
        "image_size": (64, 64) if args.demo else _prepared_size(args.data) or (128, 128),
        "text_encoder": DEFAULT_TEXT_ENCODER,
        # The demo's label depends on how image and text agree: a product of the two.
        "fusion": "bilinear" if args.demo else "concat",
    }
    for key, value in defaults.items():
        if out.get(key) is None:
            out[key] = value
    if out["freeze_backbone"] is None:
        out["freeze_backbone"] = out["image_weights"] != "none"
    check_combination(
        backbone=out["backbone"],
        image_weights=out["image_weights"],
        freeze_backbone=out["freeze_backbone"],
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_layers=args.fine_tune_layers,
        text_encoder=out["text_encoder"],
    )
    return out


def build_prepare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmserve-train prepare",
        description="Validate and split a manifest, then write its examples as sharded "
        "TFRecords of preprocessed pixels (decoded by the service's own function) for "
        "streaming training: mmserve-train --data OUT.",
    )
    p.add_argument("--data", type=Path, required=True, help="manifest file (.csv or .jsonl)")
    p.add_argument("--out", type=Path, required=True, help="the folder to write")
    p.add_argument("--image-size", type=_image_size, default=(128, 128), help="default 128")
    p.add_argument("--seed", type=int, default=42, help="the split's seed (default 42)")
    return p


def prepare_main(argv: list[str]) -> int:
    args = build_prepare_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from service.training.dataset import ManifestError
    from service.training.shards import prepare

    try:
        out = prepare(args.data, args.out, args.image_size, args.seed, lambda m: print(m))
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"prepared {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from service.training.options import OptionError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"]:
        return prepare_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        options = _model_options(args)
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.vocab_size < 2 or args.sequence_length < 1:
        print("error: --vocab-size must be >= 2 and --sequence-length >= 1", file=sys.stderr)
        return 2
    if not 0 <= args.modality_dropout < 0.5:
        print("error: --modality-dropout must be in [0, 0.5)", file=sys.stderr)
        return 2
    if (args.workers is None) != (args.worker_address is None):
        print("error: --workers and --worker-address go together", file=sys.stderr)
        return 2
    if args.workers is not None:
        from service.training.cluster import JOB_INDEX_ENV, tf_config_from_index

        if args.distribute != "multiworker":
            print("error: --workers needs --distribute multiworker", file=sys.stderr)
            return 2
        try:
            os.environ["TF_CONFIG"] = tf_config_from_index(args.workers, args.worker_address)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"TF_CONFIG from {JOB_INDEX_ENV}: {os.environ['TF_CONFIG']}", flush=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from service.training.dataset import ManifestError
    from service.training.demo_data import generate
    from service.training.modeling import ModelConfig
    from service.training.train import TrainConfig, train

    if args.demo:
        print(f"generating the demo dataset in {args.demo_dir} ...", flush=True)
        data = generate(args.demo_dir, count=args.demo_count)
        name = args.name or "demo"
    else:
        data = args.data
        name = args.name or (data.resolve() if data.is_dir() else data.resolve().parent).name
    config = TrainConfig(
        data=data,
        name=name,
        model_store=args.model_store,
        model=ModelConfig(
            **options,
            vocab_size=args.vocab_size,
            sequence_length=args.sequence_length,
            ngram_weighting=args.ngram_weighting,
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        modality_dropout=args.modality_dropout,
        deterministic=args.deterministic,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        fine_tune_layers=args.fine_tune_layers,
        data_mode=args.data_mode,
        stream_above_mb=args.stream_above_mb,
        shuffle_buffer=args.shuffle_buffer,
        shards_dir=args.shards_dir,
        distribute=args.distribute,
    )
    try:
        train(config, progress=lambda m: print(m, flush=True))
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
