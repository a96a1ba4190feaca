"""The ``mmserve`` command: ``serve`` (the server) and ``predict`` (the client).

Light on purpose: only the standard library and the client's CLI are imported here, so
``mmserve --help`` is instant and ``mmserve predict`` works from the base install (the
client only). ``serve`` imports the server when it runs, and says which extra to install
when it is missing; so does ``mmserve-train`` (:func:`train`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.client.cli import add_predict_command, run_predict

if TYPE_CHECKING:
    from service.serving.settings import Settings

# CLI option -> Settings field; unset options leave the environment's value.
_SERVE_OPTIONS = (
    "host",
    "port",
    "model_store",
    "model_name",
    "model_version",
    "device",
    "log_level",
    "workers",
    "models",
    "version_policy",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``mmserve`` argument parser (subcommands: ``serve``, ``predict``)."""
    parser = argparse.ArgumentParser(
        prog="mmserve",
        description="Serve fused image+text classifiers over HTTP. Options override "
        "MMSERVE_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="start the HTTP server",
        description=(
            "Load a model version from the store, verify it against its golden examples, "
            "and serve it."
        ),
    )
    serve.add_argument("--host", help="address to listen on (MMSERVE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (MMSERVE_PORT, default 8000)")
    serve.add_argument("--model-store", type=Path, help="folder of <name>/<version>/ artifacts")
    serve.add_argument("--model-name", help="the default model (default demo)")
    serve.add_argument(
        "--models", help="models to serve, comma-separated, or '*' for the whole store"
    )
    serve.add_argument(
        "--version-policy", help="latest (default), latest:N, a list (1,3), or name=policy;..."
    )
    serve.add_argument("--model-version", type=int, help="version to serve (default: latest)")
    serve.add_argument("--device", choices=["auto", "cpu", "gpu"], help="where to run the model")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, each with its own copy of the model "
        "(MMSERVE_WORKERS, default 1)",
    )
    add_predict_command(commands)
    return parser


def cli(argv: Sequence[str] | None = None) -> int:
    """Run the ``mmserve`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            from pydantic import ValidationError

            from service.serving.settings import Settings
        except ModuleNotFoundError as exc:
            return missing_extra("mmserve serve", "serve", exc)
        overrides: dict[str, Any] = {
            name: getattr(args, name) for name in _SERVE_OPTIONS if getattr(args, name) is not None
        }
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            parser.error(f"invalid settings: {exc}")
        return _serve(settings)
    if args.command == "predict":
        return run_predict(args)
    parser.error(f"unknown command {args.command!r}")


def _serve(settings: Settings) -> int:
    # TensorFlow's C++ INFO/WARNING lines (CPU instruction sets, CUDA probing) are noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from service.serving.app import create_app
    except ModuleNotFoundError as exc:
        return missing_extra("mmserve serve", "serve", exc)
    if settings.workers > 1:
        from service.serving import workers

        return workers.run_workers(settings)
    from service.serving import server

    return server.run_server(create_app(settings), settings)


def train(argv: Sequence[str] | None = None) -> int:
    """``mmserve-train``: the trainer, or which extra to install when it is missing."""
    try:
        from service.training.cli import main as train_main
    except ModuleNotFoundError as exc:
        return missing_extra("mmserve-train", "train", exc)
    return train_main(None if argv is None else list(argv))


def missing_extra(command: str, extra: str, exc: ModuleNotFoundError) -> int:
    """Say which extra a command needs (the base install is the client only); status 2."""
    print(
        f"{command} needs the '{extra}' extra ({exc.name} is not installed): "
        f"pip install 'mmserve[{extra}]'",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(cli())
