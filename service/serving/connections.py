"""Connection guards for ``mmserve serve``: a cap on open connections and read deadlines.

uvicorn's HTTP protocol (httptools) with five additions (its refusals answered with the
service's JSON error body):

- a connection opened while ``max_connections`` are open gets 503 and is closed at once,
  so idle or slow clients cannot exhaust the process's file descriptors;
- a request whose headers are not complete ``header_timeout_s`` after its first byte (or
  after the connection opened, for a client that sends nothing) gets 408 and is closed;
- a request whose body is not complete ``body_timeout_s`` after its headers gets 408 and
  is closed, unless its response has already started (then the connection is just closed);
- a response's head and body leave in one send (:class:`CoalescedWrites`): uvicorn writes
  them one after the other, which costs a second system call and TCP segment per answer;
- the common ``POST /v1/predict`` is answered by
  :class:`~service.serving.api.v1.plain.DirectPredict` instead of the app, when it takes
  the request: a task of the connection runs it on uvicorn's request cycle (which keeps
  pipelined answers in order, reads the body, and notices a client that leaves or a drain
  that begins) and writes its answer with the server's default headers, the request's id
  and model headers, as the app's middleware would;
- a model request (POST) that admission control refuses
  (:mod:`service.serving.api.middleware.admission`) is answered 503 with ``Retry-After``
  here, as soon as its headers are parsed: no request task, no ASGI call. It is counted,
  timed, logged and given an ``X-Request-ID`` like any answer. As in the middleware, a small
  body is discarded and the connection kept; otherwise the connection is closed. A request
  queued behind another on the same connection (pipelining) is left to the middleware, so
  that answers keep their order.

uvicorn's keep-alive timeout still closes idle connections between requests. Imported only
by the server runner, never by the app: tests of the app need no uvicorn.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import urllib.parse
from typing import Any, cast

import httptools
from prometheus_client import Counter
from starlette.types import Receive, Scope
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from service.errors import RequestTimeout, ServiceError, ServiceUnavailable
from service.serving.api.errors import error_body, error_json
from service.serving.api.middleware.admission import Admission, closes
from service.serving.api.middleware.observability import (
    MODEL_HEADER_KEY,
    REQUEST_ID_HEADER,
    VERSION_HEADER_KEY,
    RequestLog,
    request_id_of,
)
from service.serving.api.state import AppState
from service.serving.api.v1.plain import DirectAnswer, DirectPredict
from service.serving.metrics import count_refusal
from service.serving.request_record import RequestRecord
from service.serving.settings import Settings

log = logging.getLogger("mmserve.connections")

CONNECTIONS_CLOSED = Counter(
    "mmserve_connections_refused",
    "Connections the server answered and closed itself, by reason: limit (max_connections), "
    "header_timeout or body_timeout.",
    ("reason",),
)


def guarded_protocol(
    settings: Settings, state: AppState | None = None, direct: DirectPredict | None = None
) -> type[HttpToolsProtocol]:
    """The httptools protocol class with the limits of ``settings``; with the app's
    ``state``, model requests it refuses are answered before they reach the app; with
    ``direct``, the requests it takes are answered by it instead of the app."""

    class Guarded(GuardedProtocol):
        max_connections = settings.max_connections
        header_timeout = settings.header_timeout_s
        body_timeout = settings.body_timeout_s
        admission = state.admission if state is not None else None
        request_log = state.request_log if state is not None else None
        direct_predict = direct if state is not None else None

    return Guarded


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and header/body deadlines."""

    max_connections: int = 2048
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    admission: Admission | None = None
    request_log: RequestLog | None = None
    direct_predict: DirectPredict | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._discarding = False  # the body of a request refused here

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every write of this connection, uvicorn's and the response cycles', goes through
        # the one wrapper, so they keep their order.
        self.transport = cast(asyncio.Transport, CoalescedWrites(transport, self.loop))
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
        # A request right behind one refused here, in the same read: not idle after all.
        self._unset_keepalive_if_required()
        if self._deadline is None:  # a request on a kept-alive connection
            self._arm(self.header_timeout, "header_timeout")

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._refused_here():
            if not self.transport.is_closing():
                self._arm(self.body_timeout, "body_timeout")  # for the body to discard
            return
        super().on_headers_complete()
        self._arm(self.body_timeout, "body_timeout")

    def on_body(self, body: bytes) -> None:
        if not self._discarding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if self._discarding:
            self._discarding = False
            self.on_response_complete()  # the keep-alive timer, or the next request
            return
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn's one way to start a request, pipelined ones included.
        direct = self.direct_predict
        if direct is None or app is not self.app or not direct.takes(cast(Scope, cycle.scope)):
            super()._start_asgi_task(cycle, app)
            return
        context = contextvars.Context() if self.config.reset_contextvars else None
        task = self.loop.create_task(self._answer_directly(cycle, direct), context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)  # a draining server waits for it, as for the app's

    async def _answer_directly(self, cycle: RequestResponseCycle, direct: DirectPredict) -> None:
        started = time.perf_counter()
        scope = cast(Scope, cycle.scope)  # uvicorn's typed scope, as the app sees it
        try:
            answer = await direct.answer(scope, cast(Receive, cycle.receive))
        except Exception:
            log.exception("the direct answer to POST %s failed", scope["path"])
            answer = DirectAnswer(
                error_json(500, ServiceError.code, "internal server error", path=scope["path"]),
                RequestRecord(request_id_of(scope)),
                close=True,
            )
        response, record = answer.response, answer.record
        if not cycle.disconnected:  # else there is no one to answer (as uvicorn's send)
            headers = [*cycle.default_headers, *response.raw_headers]
            if answer.close and not any(name == b"connection" for name, _ in headers):
                headers.append((b"connection", b"close"))
            headers.append((_REQUEST_ID_KEY, record.request_id.encode("ascii")))
            if record.model is not None:
                headers.append((MODEL_HEADER_KEY, record.model.encode("latin-1")))
                headers.append((VERSION_HEADER_KEY, str(record.model_version).encode()))
            if any(name == b"connection" and b"close" in value.lower() for name, value in headers):
                cycle.keep_alive = False
            elif not cycle.keep_alive:  # an HTTP/1.0 or closing request, or a drain began
                headers.append((b"connection", b"close"))
            head = [STATUS_LINE[response.status_code]]
            for name, value in headers:
                head += (name, b": ", value, b"\r\n")
            head.append(b"\r\n")
            self.transport.write(b"".join(head) + response.body)
            # Complete: it need not wait for the end of the loop's pass (CoalescedWrites).
            cast(CoalescedWrites, self.transport).flush()
            cycle.waiting_for_100_continue = False
            cycle.response_started = cycle.response_complete = True
            cycle.message_event.set()
            if not cycle.keep_alive:
                self.transport.close()
            cycle.on_response()
        if self.request_log is not None:
            self.request_log.finish(
                scope, record, response.status_code, time.perf_counter() - started
            )

    def _refused_here(self) -> bool:
        """Answer a model request that admission control refuses now, and say whether it
        did. Only when no earlier request on this connection is still being answered."""
        admission = self.admission
        if (
            admission is None
            or self.parser.get_method() != b"POST"
            or (self.cycle is not None and not self.cycle.response_complete)
        ):
            return False
        started = time.perf_counter()
        path = httptools.parse_url(self.url).path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        refusal = admission.refusal(path)
        if refusal is None:
            return False
        count_refusal(refusal, "admission")
        scope = cast(Scope, self.scope)  # uvicorn's typed scope, as the app sees it
        scope["method"] = "POST"
        scope["path"] = path
        close = (
            closes(scope, refusal)
            or self.expect_100_continue  # the client may be waiting to send its body
            or not self.parser.should_keep_alive()
        )
        record = RequestRecord(request_id_of(scope))
        self._write_error(refusal, close, {REQUEST_ID_HEADER: record.request_id}, path)
        if close:
            self.transport.close()
        else:
            self._discarding = True
        if self.request_log is not None:
            self.request_log.finish(
                scope, record, refusal.status_code, time.perf_counter() - started
            )
        return True

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
        if self._discarding:  # the request was answered (refused): just close
            self.transport.close()
            return
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
        self._write_error(error, close=True)
        self.transport.close()

    def _write_error(
        self,
        error: ServiceError,
        close: bool,
        headers: dict[str, str] | None = None,
        path: str = "",
    ) -> None:
        """Write ``error`` as a complete response (the JSON error body for ``path``)."""
        body = json.dumps(error_body(error.code, error.message, path)).encode()
        head = [
            f"HTTP/1.1 {error.status_code} {_REASONS[error.status_code]}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *(("connection: close",) if close else ()),
            *(f"{name}: {value}" for name, value in error.headers.items()),
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("ascii")

_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


class CoalescedWrites:
    """A transport whose writes within one pass of the event loop leave together: a write
    is held until the next write (sent with it, at once), a close, or the end of the pass.

    uvicorn writes a response's head as soon as the app starts the response and its body
    right after: two sends, two TCP segments, two wake-ups of the client. Held this way, the
    head leaves with the body. Nothing waits longer than the current pass of the loop, and
    order is kept, since every write of the connection goes through here.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush_if_open)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        """Send what is held now."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def _flush_if_open(self) -> None:
        if self._transport.is_closing():  # the client went away meanwhile
            self._held = None
        else:
            self.flush()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, abort...
        return getattr(self._transport, name)
