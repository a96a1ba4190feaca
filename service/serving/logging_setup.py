"""Log output for the ``mmserve`` loggers: one JSON object per line, or plain text.

Only the ``mmserve`` loggers are configured (uvicorn keeps its own), and only when nothing
else has configured logging: a root logger with handlers (an embedding application, pytest)
is left to format every record itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Literal

from service.timestamps import utc_millis

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


def _json_value(value: object) -> str:
    """``value`` as :data:`_ENCODER` writes it, the common types without its machinery."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    if isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    return _ENCODER.encode(value)


def json_line(level: str, logger: str, message: str, fields: Mapping[str, object]) -> str:
    """The line :class:`JsonFormatter` writes for a record made now with these ``fields``
    (its ``extra=``), built without the record."""
    parts = [
        '{"time":"',
        utc_millis(time.time()),
        '","level":',
        encode_basestring_ascii(level),
        ',"logger":',
        encode_basestring_ascii(logger),
        ',"message":',
        encode_basestring_ascii(message),
    ]
    for key, value in fields.items():
        parts += (",", encode_basestring_ascii(key), ":", _json_value(value))
    parts.append("}")
    return "".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO-8601), ``level``, ``logger``,
    ``message``, the fields passed with ``extra=``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_millis(record.created),
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


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs. Besides records, it takes lines
    already formatted (:meth:`write_line`): the access log's, one per request, skip building
    a record and formatting it (about 40 us of CPU a request under load).

    Lines written on an event loop's thread are written together, in one system call, when
    the loop has run the callbacks that are ready: a batch's answers, finished in the same
    pass of the loop, cost one write, not one each. A record keeps its place after the
    lines before it, and ``flush`` (logging's shutdown calls it) writes what is waiting.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def write_line(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            first = len(self._lines) == 1
        if first:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop's thread
                self._write_lines()
            else:
                loop.call_soon(self._write_lines)

    def _write_lines(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
            if not lines:
                return
            try:
                lines.append("")
                self.stream.write(self.terminator.join(lines))
                super().flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": lines[0]}))

    def emit(self, record: logging.LogRecord) -> None:
        if self._lines:
            self._write_lines()
        super().emit(record)

    def flush(self) -> None:
        self._write_lines()
        super().flush()


def direct_handler(logger: logging.Logger, level: int = logging.INFO) -> LineHandler | None:
    """The handler a ``level`` record of ``logger`` would reach, when it would reach that one
    handler alone, it is ours, it writes JSON and no filter sits on the way: then
    ``handler.write_line(json_line(...))`` writes what logging would have. None otherwise
    (an application's own handlers or filters, text format, pytest's capture), and the
    record must go through logging."""
    found: LineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not LineHandler
                or handler.filters
                or handler.level > level
                or type(handler.formatter) is not JsonFormatter
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


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
    handler = LineHandler()
    handler.name = _HANDLER_NAME
    handler.setFormatter(formatter(log_format))
    logger.addHandler(handler)
