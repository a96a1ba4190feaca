"""The ASGI entry: ``app`` for ``uvicorn service.main:app`` (settings from ``MMSERVE_*``).

Importing this module is cheap: the models load when the server starts. The ``mmserve``
command lives in :mod:`service.cli` (``python -m service.main`` runs it too).
"""

from __future__ import annotations

import os

# TensorFlow's C++ INFO/WARNING lines (CPU instruction sets, CUDA probing) are noise here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.cli import cli
from service.serving.app import create_app

app = create_app()

__all__ = ["app", "cli"]

if __name__ == "__main__":
    raise SystemExit(cli())
