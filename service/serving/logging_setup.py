"""Log output for the ``mmserve`` loggers: one JSON object per line, or plain text.

Only the ``mmserve`` loggers are configured (uvicorn keeps its own), and only when nothing
else has configured logging: a root logger with handlers (an embedding application, pytest)
is left to format every record itself.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]
"""How the ``mmserve`` loggers write records."""

_TEXT_FORMAT = "%(levelname)-8s %(name)s: %(message)s"
_HANDLER_NAME = "mmserve"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime", "taskName"]
)

# Built once: json.dumps with any option builds a new encoder on every call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO-8601), ``level``, ``logger``,
    ``message``, the fields passed with ``extra=``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        # The set difference runs in C; the loop keeps the fields in the order they were given.
        extra = fields.keys() - _STANDARD_ATTRS
        if extra:
            entry.update((k, v) for k, v in fields.items() if k in extra and k[0] != "_")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(entry)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter for ``log_format``."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)


def configure_logging(level: str, log_format: LogFormat = "json") -> None:
    """Set the ``mmserve`` loggers' level and, when the root logger has no handler (as under
    plain uvicorn), write them to stderr in ``log_format``. Safe to call more than once: a
    later call changes the level and the format."""
    logger = logging.getLogger("mmserve")
    logger.setLevel(level.upper())
    ours = [handler for handler in logger.handlers if handler.name == _HANDLER_NAME]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter(log_format))
        return
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.name = _HANDLER_NAME
    handler.setFormatter(formatter(log_format))
    logger.addHandler(handler)
