"""``mmserve-train``: manifest (or the demo set) -> versioned model artifact."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    from service.training.options import BACKBONES, FUSIONS, TEXT_ENCODERS

    p = argparse.ArgumentParser(
        prog="mmserve-train",
        description="Train a fused image+text classifier from a manifest (CSV or JSONL with "
        "image|file_name, text, label and optional split columns) and publish it as a new "
        "version in the model store.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="manifest file (.csv or .jsonl)")
    src.add_argument("--demo", action="store_true", help="generate and train on the demo set")
    p.add_argument("--model-store", type=Path, default=Path("model_store"))
    p.add_argument(
        "--name", help="model name (default: 'demo' with --demo, else the manifest folder's name)"
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
    p.add_argument("--backbone", choices=BACKBONES, default="small_cnn")
    p.add_argument(
        "--image-weights",
        default="none",
        help="none | imagenet (downloads; keras.applications backbones) | PATH",
    )
    p.add_argument("--text-encoder", choices=TEXT_ENCODERS, default="lstm")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.image_weights not in ("none", "imagenet") and args.backbone == "small_cnn":
        print(
            "error: --image-weights applies to keras.applications backbones only", file=sys.stderr
        )
        return 2
    if args.vocab_size < 2 or args.sequence_length < 1:
        print("error: --vocab-size must be >= 2 and --sequence-length >= 1", file=sys.stderr)
        return 2
    if not 0 <= args.modality_dropout < 0.5:
        print("error: --modality-dropout must be in [0, 0.5)", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from service.training.dataset import ManifestError
    from service.training.demo_data import generate
    from service.training.modeling import ModelConfig
    from service.training.train import TrainConfig, train

    if args.demo:
        print(f"generating the demo dataset in {args.demo_dir} ...", flush=True)
        data = generate(args.demo_dir, count=args.demo_count)
        name = args.name or "demo"
        size = args.image_size or (64, 64)
        fusion = args.fusion or "bilinear"
    else:
        data = args.data
        name = args.name or data.resolve().parent.name
        size = args.image_size or (128, 128)
        fusion = args.fusion or "concat"
    config = TrainConfig(
        data=data,
        name=name,
        model_store=args.model_store,
        model=ModelConfig(
            image_size=size,
            backbone=args.backbone,
            image_weights=args.image_weights,
            text_encoder=args.text_encoder,
            fusion=fusion,
            vocab_size=args.vocab_size,
            sequence_length=args.sequence_length,
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        modality_dropout=args.modality_dropout,
        deterministic=args.deterministic,
    )
    try:
        train(config, progress=lambda m: print(m, flush=True))
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
