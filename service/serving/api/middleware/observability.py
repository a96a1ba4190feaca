"""Per-request metrics and the access log: a pure ASGI middleware, outermost in the app.

Every HTTP request is counted in ``mmserve_http_requests_total`` and timed in
``mmserve_http_request_duration_seconds``, labelled by method, route *template* (e.g.
``/v1/models/{name}``, never the raw path: the label set stays bounded) and status code;
paths that match no route are labelled ``unmatched``. The request gets an id (the
client's ``X-Request-ID`` when it is printable ASCII of at most 128 characters, else a new
random version-4 UUID in hex), echoed in the response's ``X-Request-ID``, and one line on
the ``mmserve.access`` logger. The line holds the id, method, route, path, status and latency,
plus, when the request reached the model, the number of items and the model name and
version that served it. Headers, query strings and bodies are never logged.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client.metrics import Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.serving.api.state import app_state
from service.serving.logging_setup import direct_handler, json_line
from service.serving.metrics import HTTP_REQUESTS, HTTP_SECONDS
from service.serving.request_record import RequestRecord, recording

log = logging.getLogger("mmserve.access")

UNMATCHED = "unmatched"
"""The route label of a request that matches no route."""

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_HEADER = "X-Model-Name"
VERSION_HEADER = "X-Model-Version"
"""Response headers naming the model version that answered a model request."""
MODEL_HEADER_KEY = MODEL_HEADER.lower().encode("ascii")
VERSION_HEADER_KEY = VERSION_HEADER.lower().encode("ascii")

# A client's id is kept only when it is visible ASCII, at most 128 characters; anything
# else (spaces, control characters, a huge value) could forge or flood log lines.
_VALID_ID = re.compile(rb"[\x21-\x7e]{1,128}")
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("ascii")
# Any other method is labelled OTHER: a client must not be able to add label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_LOGGED_PATH = 256

Templates = Callable[[], Sequence[tuple[re.Pattern[str], str]]]
"""The app's route templates with their compiled patterns."""


class RequestLog:
    """Counts, times and logs answered requests (:class:`RequestObserver`'s, and those the
    server's connections refuse before the app sees them)."""

    def __init__(
        self, templates: Templates | None = None, access_log: Callable[[], bool] = lambda: True
    ) -> None:
        self._templates = templates
        self._access_log = access_log
        # One (counter, histogram) child per label set: labels() takes a lock and builds a
        # key on every call, this is one dict lookup. Bounded like the labels themselves.
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def finish(self, scope: Scope, record: RequestRecord, status: int, seconds: float) -> None:
        """Count, time and log one answered request (``scope``: its method, path, headers
        and, once routed, route)."""
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = self._route(scope)
        key = (method, route, str(status))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                HTTP_REQUESTS.labels(*key),
                HTTP_SECONDS.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)
        if self._access_log() and log.isEnabledFor(logging.INFO):
            path = _loggable(scope["path"])
            latency_ms = round(seconds * 1000, 3)
            fields: dict[str, Any] = {
                "request_id": record.request_id,
                "method": method,
                "route": route,
                "path": path,
                "status": status,
                "latency_ms": latency_ms,
            }
            if record.items is not None:
                fields["items"] = record.items
            if record.model is not None:
                fields["model"] = record.model
                fields["model_version"] = record.model_version
            message = f"{method} {path} {status} {latency_ms:.1f}ms"
            handler = direct_handler(log)
            if handler is not None:
                handler.write_line(json_line("info", log.name, message, fields))
            else:
                log.info("%s", message, extra=fields)

    def prepare(self) -> None:
        """Build the route templates now (the app's OpenAPI document, about 0.1 s), not in
        the first request that needs them: the server does before serving."""
        if self._templates is not None:
            self._templates()

    def _route(self, scope: Scope) -> str:
        """The template of the route that served the request. A request refused before
        routing (e.g. a body over the size limit) is matched against the templates."""
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(template, str):
            return template
        if self._templates is not None:
            path = scope["path"]
            for pattern, candidate in self._templates():
                if pattern.match(path):
                    return candidate
        return UNMATCHED


class RequestObserver:
    """Count, time and log every HTTP request, and give each one an id."""

    def __init__(self, app: ASGIApp, request_log: RequestLog) -> None:
        self.app = app
        self._log = request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        id_header = (_HEADER_KEY, request_id.encode("ascii"))
        record = RequestRecord(request_id)
        status = 500  # what the server answers when the app fails before responding

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), id_header]
                if record.model is not None:
                    # Which model version answered, for clients and proxies (canary splits).
                    headers.append((MODEL_HEADER_KEY, record.model.encode("latin-1")))
                    headers.append((VERSION_HEADER_KEY, str(record.model_version).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            with recording(record):
                await self.app(scope, receive, send_with_id)
        finally:
            self._log.finish(scope, record, status, time.perf_counter() - started)


def install_observability(app: FastAPI) -> None:
    """Add the middleware; call it after every other ``add_middleware`` so that it is the
    outermost and sees every answer (a refused oversized body included)."""
    cache: list[tuple[re.Pattern[str], str]] | None = None

    def templates() -> Sequence[tuple[re.Pattern[str], str]]:
        # The documented paths: built on first need, when every router is included.
        nonlocal cache
        if cache is None:
            try:
                paths = list(app.openapi().get("paths", {}))
            except Exception:  # a broken schema must not break requests
                log.exception("cannot list the route templates; using %r", UNMATCHED)
                paths = []
            cache = [(compile_path(path)[0], path) for path in paths]
        return cache

    state = app_state(app)

    def access_log() -> bool:
        settings = state.settings
        return settings.access_log if settings is not None else True

    state.request_log = RequestLog(templates, access_log)
    app.add_middleware(RequestObserver, request_log=state.request_log)


def request_id_of(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is acceptable, else a new one."""
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            if _VALID_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return new_request_id()


# Version 4 and the RFC 4122 variant, as uuid.UUID(version=4) sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random version-4 UUID in hex, as ``uuid.uuid4().hex`` gives, drawn from the
    process's pseudo-random generator instead of ``os.urandom``: a request id identifies,
    it guards nothing. ``os.urandom`` is a system call that lets go of the interpreter
    lock, and the event loop then waited for a decoding thread to hand it back (about 5%
    of the profile's samples, and one context switch in five per request)."""
    return f"{(random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"


def _loggable(path: str) -> str:
    """``path`` bounded and with control characters escaped (it is percent-decoded, so a
    client can put a newline in it)."""
    if len(path) > _MAX_LOGGED_PATH:
        path = path[:_MAX_LOGGED_PATH] + "..."
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
