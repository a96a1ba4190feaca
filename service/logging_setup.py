"""Log output for the ``mmserve`` loggers when nothing else has configured logging."""

from __future__ import annotations

import logging

_FORMAT = "%(levelname)-8s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Set the ``mmserve`` loggers' level and, when the root logger has no handler (as under
    plain uvicorn), give them one on stderr. Safe to call more than once."""
    logger = logging.getLogger("mmserve")
    logger.setLevel(level.upper())
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
