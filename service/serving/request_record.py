"""What the handlers tell the access log about the request being served: a record per
request, current while the request is handled, that any layer may fill in (the data plane
its items, the API the model version) without importing the HTTP layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

_current: ContextVar[RequestRecord | None] = ContextVar("mmserve_request", default=None)


@dataclass(slots=True)
class RequestRecord:
    """What the handlers tell the access log about the request being served."""

    request_id: str
    items: int | None = None
    model: str | None = None
    model_version: int | None = None


def note_items(items: int) -> None:
    """Record how many image+text pairs the current request sent to the model."""
    record = _current.get()
    if record is not None:
        record.items = items


def note_model(name: str, version: int) -> None:
    """Record the model version serving the current request."""
    record = _current.get()
    if record is not None:
        record.model = name
        record.model_version = version


@contextmanager
def recording(record: RequestRecord) -> Iterator[RequestRecord]:
    """Make ``record`` the current request's while the block runs: :func:`note_items` and
    :func:`note_model` fill it in."""
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


def current_request_id() -> str | None:
    """The id of the request being served (None outside a request)."""
    record = _current.get()
    return record.request_id if record is not None else None
