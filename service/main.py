"""Entry points: ``app`` for ``uvicorn service.main:app`` and the ``mmserve`` CLI.

Importing this module is cheap: the model loads when the server starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

# TensorFlow's C++ INFO/WARNING lines (CPU instruction sets, CUDA probing) are noise here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.client.cli import add_predict_command, run_predict
from service.serving.app import create_app
from service.serving.settings import Settings

app = create_app()

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
    serve.add_argument("--model-name", help="model to serve (default demo)")
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
    if settings.workers > 1:
        from service.serving import workers

        return workers.run_workers(settings)
    from service.serving import server

    return server.run_server(create_app(settings), settings)


if __name__ == "__main__":
    raise SystemExit(cli())
