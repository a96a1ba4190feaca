"""The request body limit: a pure ASGI middleware that never holds an oversized body.

A declared ``Content-Length`` above the limit is refused before a byte of the body is read.
A body without one (chunked) is counted as the application reads it, and the read that
passes the limit fails, so at most one chunk beyond the limit is ever in memory. Either way
the answer is 413 with ``Connection: close``: the rest of the body is never read, so the
connection cannot be reused. Any other answer given before the whole body was read (a
malformed body, a missing API key) closes the connection too, rather than leaving the
server to read and discard the rest of the body.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.serving.api.errors import error_json
from service.serving.api.state import app_state

# Requests that carry no body worth limiting (the health probes are GETs).
_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestTooLarge(PayloadTooLarge):
    """The body is larger than ``max_request_bytes``."""

    @property
    def headers(self) -> dict[str, str]:
        # The unread rest of the body would be taken for the next request: close instead.
        return {"Connection": "close"}


class BodySizeLimit:
    """Refuse request bodies larger than ``limit()`` bytes (``None``: no limit yet)."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int | None]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit() if scope["type"] == "http" else None
        if limit is None or scope["method"] in _BODILESS_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            declared = _content_length(scope)
        except BadRequest as exc:
            await _answer(exc, scope, receive, send)
            return
        if declared is not None and declared > limit:
            await _answer(
                _too_large(f"the body declares {declared} bytes", limit), scope, receive, send
            )
            return

        received = 0
        body_done = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(f"the body is more than {limit} bytes", limit)
                body_done = not message.get("more_body", False)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not body_done:
                    message = _closing(message)
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except RequestTooLarge as exc:
            # The app's error handlers normally answer this; here only when one let it through.
            if started:
                raise
            await _answer(exc, scope, receive, send)


def install_request_limits(app: FastAPI) -> None:
    """Limit request bodies to the running settings' ``max_request_bytes``.

    The settings are read per request from ``app.state`` because they are only known once
    the lifespan has started.
    """

    state = app_state(app)

    def limit() -> int | None:
        settings = state.settings
        return settings.max_request_bytes if settings is not None else None

    app.add_middleware(BodySizeLimit, limit=limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            if not (text.isascii() and text.isdigit()):
                raise BadRequest(f"invalid Content-Length {text[:40]!r}")
            return int(text)
    return None


def _closing(start: Message) -> Message:
    """The response start with ``Connection: close``: it answers before the whole body was
    read (a malformed body, a missing key), and the server would otherwise read and discard
    the rest, however long, to reuse the connection."""
    headers = list(start.get("headers", []))
    if not any(name.lower() == b"connection" for name, _ in headers):
        headers.append((b"connection", b"close"))
    return {**start, "headers": headers}


def _too_large(what: str, limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"{what}; the limit is {limit} bytes (max_request_bytes)")


async def _answer(exc: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
    headers = {"Connection": "close", **exc.headers}
    response = error_json(exc.status_code, exc.code, exc.message, headers, path=scope["path"])
    await response(scope, receive, send)
