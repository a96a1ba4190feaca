"""Admission control: refuse work the service cannot take before paying for it.

A pure ASGI middleware in front of the routes. A model request (any POST) is refused with
503, ``Retry-After`` and ``Connection: close`` before a byte of its body is read when

- the service is draining (SIGTERM): the load balancer should send it elsewhere;
- ``max_in_flight`` POST requests are already being handled: memory for request bodies
  stays under ``max_in_flight x max_request_bytes`` whatever clients send;
- the batcher's queue of the model the request would go to is full (the default model's
  for ``/v1/predict``, model ``{name}``'s for ``/v1/models/{name}/...`` and
  ``/v2/models/{name}/...``): the request could only be refused after decoding. The
  requests already let in for that model and still on their way to its queue (their body
  being read or their images decoded) count as one queued item each, so that a request let
  in is not refused at the queue after it was paid for.

A refusal costs the parsing of the request line and headers and nothing else; under
``mmserve serve`` the connection answers it before the app is called
(:mod:`service.serving.connections`), with the same decision (:class:`Admission`). A body of
up to 64 KiB (which the server has most likely received already) is discarded and the
connection kept for the client's next request; a larger or unannounced one closes the
connection rather than be read only to be thrown away.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Overloaded, QueueFull, ServiceUnavailable, ShuttingDown
from service.serving.api.errors import error_json
from service.serving.api.state import AppState, app_state
from service.serving.inference.batching import AdaptiveBatcher
from service.serving.metrics import count_refusal

_MODEL_PATH = re.compile(r"^/v[12]/models/([^/]+)/")

RETRY_AFTER_S = 1
"""What a refused client is told to wait: capacity frees up within a batch or two."""

DRAIN_RETRY_AFTER_S = 5
"""What a client refused by a draining process is told to wait (another replica answers)."""

KEEP_ALIVE_BODY_BYTES = 64 * 1024
"""Largest declared body a refusal discards to keep the connection (the server's read
buffer holds this much anyway)."""


class Admission:
    """The decision, shared by this middleware and the server's connections (which refuse
    before the request reaches the app, :mod:`service.serving.connections`)."""

    def __init__(self, state: AppState) -> None:
        self._state = state
        self.in_flight = 0
        """Model requests (POST) being handled now, by this process."""

    def refusal(self, path: str) -> ServiceUnavailable | None:
        """Why a POST to ``path`` is refused now; None when it is taken."""
        return self.decide(path)[0]

    def decide(self, path: str) -> tuple[ServiceUnavailable | None, AdaptiveBatcher | None]:
        """Why a POST to ``path`` is refused now (None when it is taken), and the batcher
        of the model it goes to (None when it goes to none: not a model request, a model
        the route answers 404, or the service not started)."""
        state = self._state
        if state.draining:
            refusal = ShuttingDown("the service is shutting down", retry_after=DRAIN_RETRY_AFTER_S)
            return refusal, None
        settings = state.settings
        if settings is None:
            return None, None  # not started: the routes answer 503 themselves
        registry = state.registry
        model = registry.find(_model_name(path)) if registry is not None else None
        batcher = None if model is None else model.primary().batcher
        if self.in_flight >= settings.max_in_flight:
            overloaded = Overloaded(
                f"{self.in_flight} requests in flight (limit {settings.max_in_flight}); "
                "retry shortly",
                retry_after=RETRY_AFTER_S,
            )
            if batcher is not None:
                batcher.note_refusal()
            return overloaded, None
        if model is None or batcher is None:
            return None, None  # not a model request, or one the route answers 404
        if batcher.full:
            batcher.note_refusal()
            full = QueueFull(
                f"the queue of {model.name} holds {batcher.queued_items} items and "
                f"{batcher.admitted_requests} requests are on their way to it "
                f"(limit {settings.max_queue_items}); retry shortly",
                retry_after=RETRY_AFTER_S,
            )
            return full, None
        return None, batcher

    @contextmanager
    def taken(self, batcher: AdaptiveBatcher | None) -> Iterator[None]:
        """Count a request :meth:`decide` let in as in flight, and as on its way to
        ``batcher``'s queue, while the block runs."""
        self.in_flight += 1
        try:
            with nullcontext() if batcher is None else batcher.admitted():
                yield
        finally:
            self.in_flight -= 1


def refusal_response(scope: Scope, refusal: ServiceUnavailable) -> JSONResponse:
    """The answer to a request :meth:`Admission.decide` refused (counted as refused at
    admission), with ``Connection: close`` when :func:`closes` says so."""
    count_refusal(refusal, "admission")
    headers = dict(refusal.headers)
    if closes(scope, refusal):
        headers["Connection"] = "close"
    return error_json(
        refusal.status_code, refusal.code, refusal.message, headers, path=scope["path"]
    )


class AdmissionControl:
    """Refuse POST requests while draining, over the in-flight cap, or with a full queue."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self._admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        admission = self._admission
        refusal, batcher = admission.decide(scope["path"])
        if refusal is not None:
            await refusal_response(scope, refusal)(scope, receive, send)
            return
        with admission.taken(batcher):
            await self.app(scope, receive, send)


def closes(scope: Scope, refusal: ServiceUnavailable) -> bool:
    """Whether refusing this request closes the connection: when draining, and unless the
    request declares a body small enough to discard (not chunked)."""
    if isinstance(refusal, ShuttingDown):
        return True
    for name, value in scope["headers"]:
        if name == b"content-length":
            return not (value.isdigit() and int(value) <= KEEP_ALIVE_BODY_BYTES)
    return True


def install_admission_control(app: FastAPI) -> None:
    """Refuse model requests the service cannot take, per the running settings."""
    state = app_state(app)
    state.admission = Admission(state)
    app.add_middleware(AdmissionControl, admission=state.admission)


def _model_name(path: str) -> str | None:
    """The model a POST is for: ``{name}`` of ``/v1/models/{name}/...`` or
    ``/v2/models/{name}/...``; None (the default model) for any other path."""
    match = _MODEL_PATH.match(path)
    return match.group(1) if match else None
