"""``mmserve predict``: ask a running service about one image+text pair from the shell.

Only the standard library is imported at module level; the HTTP client loads when the
command runs, so ``mmserve predict --help`` is instant (and never touches TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from service.client.types import Prediction

API_KEY_ENV = "MMSERVE_API_KEY"
BAR_WIDTH = 30


def add_predict_command(commands: Any) -> None:
    """Add the ``predict`` subcommand to ``mmserve``'s subparsers."""
    predict: argparse.ArgumentParser = commands.add_parser(
        "predict",
        help="classify one image+text pair with a running server",
        description=(
            "Send one image and its text to a running mmserve and print the class "
            "probabilities, highest first."
        ),
    )
    predict.add_argument("--url", required=True, help="the server, e.g. http://localhost:8000")
    predict.add_argument(
        "--image", type=Path, help="image file to classify (leave out: the text alone)"
    )
    predict.add_argument(
        "--text", help="the text that goes with the image (leave out: the image alone)"
    )
    predict.add_argument(
        "--explain",
        choices=["modality"],
        help="also ask for the answer from the image alone and from the text alone "
        "(three items' model cost)",
    )
    predict.add_argument(
        "--top-k", type=_positive_int, metavar="K", help="print only the K most probable"
    )
    predict.add_argument(
        "--model", metavar="NAME", help="the model to ask (default: the server's default model)"
    )
    pinned = predict.add_mutually_exclusive_group()
    pinned.add_argument(
        "--version", type=_positive_int, metavar="V", help="a served version of --model"
    )
    pinned.add_argument(
        "--label", metavar="L", help="the version of --model a label points to (stable, canary)"
    )
    predict.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get(API_KEY_ENV),
        help=f"API key, sent as 'Authorization: Bearer' (default: ${API_KEY_ENV})",
    )
    predict.add_argument("--json", action="store_true", help="print the service's JSON answer")
    predict.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default 30)"
    )
    predict.add_argument(
        "--retries",
        type=int,
        default=3,
        help="retries on 503 or a failed connection, with backoff (default 3)",
    )


def run_predict(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``mmserve predict``: 0 on success, 1 with a one-line error on ``err`` otherwise
    (stdout and stderr by default)."""
    from service.client import Client, ClientError

    out = out or sys.stdout
    err = err or sys.stderr
    model = getattr(args, "model", None)
    version = getattr(args, "version", None)
    label = getattr(args, "label", None)
    if model is None and (version is not None or label is not None):
        print("mmserve predict: error: --version and --label need --model", file=err)
        return 1
    if args.image is None and not args.text:
        print("mmserve predict: error: give --image, --text or both", file=err)
        return 1

    try:
        with Client(args.url, args.api_key, args.timeout, max(0, args.retries)) as client:
            prediction = client.predict(
                args.image,
                args.text,
                top_k=args.top_k,
                model=model,
                version=version,
                label=label,
                explain=getattr(args, "explain", None),
            )
    except ClientError as error:
        print(f"mmserve predict: error: {_describe(error, args.url)}", file=err)
        return 1
    except OSError as error:
        print(f"mmserve predict: error: cannot read image {args.image}: {error}", file=err)
        return 1
    if args.json:
        print(json.dumps(prediction.to_dict()), file=out)
    else:
        print(format_table(prediction), file=out)
    return 0


def format_table(prediction: Prediction) -> str:
    """Labels and probabilities, highest first, with a bar; the model and version above."""
    width = max([len("label"), *(len(label) for label in prediction.probabilities)])
    lines = [
        f"model {prediction.model}, version {prediction.version}: {prediction.label}",
        f"{'label':<{width}}  probability",
    ]
    for label, probability in prediction.ranked:
        bar = "#" * round(probability * BAR_WIDTH)
        lines.append(f"{label:<{width}}  {probability:>11.4f}  {bar}".rstrip())
    if prediction.modalities not in (None, "image+text"):
        lines.append(f"from the {prediction.modalities} alone")
    lines.extend(f"warning: {warning}" for warning in prediction.warnings or ())
    explanation = prediction.explanation
    if explanation is not None:
        for name, effect in (
            ("image", explanation.without_image),
            ("text", explanation.without_text),
        ):
            change = "changes" if effect.top_class_changes else "stays"
            lines.append(
                f"without the {name}: {effect.label} ({change}), top class probability "
                f"{effect.probability_change:+.4f}"
            )
    return "\n".join(lines)


def _describe(error: Exception, url: str) -> str:
    from service.client.types import APIError, TransportError

    if isinstance(error, TransportError):
        return f"cannot reach {url}: {error.message}"
    if isinstance(error, APIError):
        return f"the server answered {error.status} {error.code}: {error.message}"
    return str(error)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number
