"""Connection guards for ``mmserve serve``: a cap on open connections and read deadlines.

uvicorn's HTTP protocol (httptools) with three additions, each answered with the service's
JSON error body and ``Connection: close``:

- a connection opened while ``max_connections`` are open gets 503 and is closed at once,
  so idle or slow clients cannot exhaust the process's file descriptors;
- a request whose headers are not complete ``header_timeout_s`` after its first byte (or
  after the connection opened, for a client that sends nothing) gets 408;
- a request whose body is not complete ``body_timeout_s`` after its headers gets 408,
  unless its response has already started (then the connection is just closed).

uvicorn's keep-alive timeout still closes idle connections between requests. Imported only
by the server runner, never by the app: tests of the app need no uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import RequestTimeout, ServiceError, ServiceUnavailable
from service.serving.settings import Settings

log = logging.getLogger("mmserve.connections")

CONNECTIONS_CLOSED = Counter(
    "mmserve_connections_refused",
    "Connections the server answered and closed itself, by reason: limit (max_connections), "
    "header_timeout or body_timeout.",
    ("reason",),
)


def guarded_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    """The httptools protocol class with the limits of ``settings``."""

    class Guarded(GuardedProtocol):
        max_connections = settings.max_connections
        header_timeout = settings.header_timeout_s
        body_timeout = settings.body_timeout_s

    return Guarded


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and header/body deadlines."""

    max_connections: int = 2048
    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            CONNECTIONS_CLOSED.labels("limit").inc()
            self._refuse(
                ServiceUnavailable(
                    f"{self.max_connections} connections are open (max_connections)",
                    retry_after=1,
                )
            )
            return
        self._arm(self.header_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a request on a kept-alive connection
            self._arm(self.header_timeout, "header_timeout")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self.body_timeout, "body_timeout")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, reason: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        CONNECTIONS_CLOSED.labels(reason).inc()
        cycle = self.cycle
        if reason == "body_timeout" and cycle is not None:
            # The app is waiting for the rest of the body: it sees a disconnect, and
            # whatever it would answer is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        what = "headers" if reason == "header_timeout" else "body"
        limit = self.header_timeout if reason == "header_timeout" else self.body_timeout
        log.info("closing a connection: its request %s took over %gs", what, limit)
        self._refuse(RequestTimeout(f"the request {what} did not arrive within {limit:g}s"))

    def _refuse(self, error: ServiceError) -> None:
        """Write ``error`` as a complete response and close the connection."""
        body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
        head = [
            f"HTTP/1.1 {error.status_code} {_REASONS[error.status_code]}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
            *(f"{name}: {value}" for name, value in error.headers.items()),
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.transport.close()


_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}
