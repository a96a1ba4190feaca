"""``POST /v1/predict`` for the common request, without FastAPI's per-request machinery.

The FastAPI route (:func:`service.serving.api.v1.predict.predict`) stays the documented one
and answers every request the two shortcuts here leave to it. Both take a request only when
the route's dependencies and parameters have nothing to decide: a POST to ``/v1/predict``
with no query string, while no API key is configured, the models are loaded and the
service is not draining. Both run the same steps as the FastAPI route
(:func:`~service.serving.api.v1.predict.predict_one` on the default model's runtime, held
with :func:`~service.serving.api.deps.holding`) and send the same JSON.

- :class:`PlainPredictRoute`, the app's first route, skips dependency solving, the
  response's validation and the exit stacks: about 0.35 ms of CPU per request on the
  development machine, where a request costs about 2 ms in all. Errors raised on the way
  reach the app's exception handlers as they do from any route.
- :class:`DirectPredict` is called by ``mmserve serve``'s connections
  (:mod:`service.serving.connections`) instead of the app, and does what the app's
  middleware would (admission, the request's id, record, count and log line, the body
  limit's ``Connection: close``) around the same call, with the app's own exception
  handlers for its errors. It also takes only a body that declares a length within
  ``max_request_bytes``, and leaves every request to the app while OpenTelemetry is on
  (its spans come from the app) or when the app has middleware it does not know.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from service.serving.api.deps import holding
from service.serving.api.errors import handled
from service.serving.api.media import JSON
from service.serving.api.middleware.admission import AdmissionControl, refusal_response
from service.serving.api.middleware.limits import BodySizeLimit
from service.serving.api.middleware.observability import RequestObserver, request_id_of
from service.serving.api.state import AppState, app_state
from service.serving.api.v1.predict import predict_one
from service.serving.api.v1.schemas import PredictResponse
from service.serving.request_record import RequestRecord, recording

PATH = "/v1/predict"
_SERIALIZER = PredictResponse.__pydantic_serializer__
_server_log = logging.getLogger("uvicorn.error")  # where the server logs unhandled errors


def _plain(state: AppState) -> bool:
    """Whether the FastAPI route's dependencies have nothing to decide now."""
    settings = state.settings
    return not (
        settings is None or settings.api_key_set or state.registry is None or state.draining
    )


async def _answer_body(state: AppState, request: Request) -> bytes:
    """The FastAPI route's work and its JSON (its response model, ``exclude_none``)."""
    assert state.settings is not None and state.registry is not None  # see _plain
    with holding(state.registry.default().route()) as runtime:
        answer = await predict_one(request, runtime, state.settings, top_k=None)
    body: bytes = _SERIALIZER.to_json(answer, exclude_none=True, by_alias=True)
    return body


class PlainPredictRoute(Route):
    """See the module's docstring. Kept out of the OpenAPI document: the FastAPI route
    documents the endpoint."""

    def __init__(self) -> None:
        super().__init__(PATH, endpoint=self._answer, methods=["POST"], include_in_schema=False)
        self.app = self._answer  # an ASGI app, not a request -> response function

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"]:
            return Match.NONE, {}
        if not _plain(app_state(scope["app"])):
            return Match.NONE, {}  # the FastAPI route's dependencies answer these
        match, child_scope = super().matches(scope)
        if match is Match.FULL:
            child_scope["route"] = self  # as FastAPI's routes do: metrics and log read it
        return match, child_scope

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _answer_body(app_state(scope["app"]), Request(scope, receive))
        await Response(body, media_type=JSON)(scope, receive, send)


_KNOWN_MIDDLEWARE = frozenset({RequestObserver, AdmissionControl, BodySizeLimit})


@dataclass
class DirectAnswer:
    """What :meth:`DirectPredict.answer` sends: the response (its status, headers and body
    as the app would send them, but for the request's id and model headers, which are in
    ``record``) and whether the connection closes after it."""

    response: Response
    record: RequestRecord
    close: bool


class DirectPredict:
    """See the module's docstring: the app's answer to ``POST /v1/predict`` without the
    app's middleware stack and routing, for the server's connections."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._state = app_state(app)
        self._route = next((r for r in app.router.routes if isinstance(r, PlainPredictRoute)), None)
        # Another app, or this one with middleware added: every request goes to the app.
        self._known = self._route is not None and (
            {m.cls for m in app.user_middleware} <= _KNOWN_MIDDLEWARE
        )

    def takes(self, scope: Scope) -> bool:
        """Whether this request (its headers parsed) is answered here."""
        if scope["path"] != PATH or scope["method"] != "POST" or scope["query_string"]:
            return False
        state = self._state
        settings = state.settings
        if settings is None or not settings.direct_predict or settings.opentelemetry:
            return False
        if not self._known or not _plain(state):
            return False
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        # Chunked or malformed lengths and bodies over the limit: the app's body limit.
        return (
            declared is not None
            and declared.isdigit()
            and int(declared) <= settings.max_request_bytes
        )

    async def answer(self, scope: Scope, receive: Receive) -> DirectAnswer:
        """The answer to a request :meth:`takes` took; ``receive`` gives its body as the
        app would get it. Errors get the app's error answers; one no handler takes raises
        (the caller answers 500)."""
        state = self._state
        assert state.admission is not None
        scope["app"] = self._app
        scope["route"] = self._route  # the label and log line read it
        record = RequestRecord(request_id_of(scope))
        refusal, batcher = state.admission.decide(PATH)
        if refusal is not None:
            # Its own Connection header says whether the connection closes after it.
            return DirectAnswer(refusal_response(scope, refusal), record, close=False)
        body_done = False

        async def watched() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        request = Request(scope, watched)
        with recording(record), state.admission.taken(batcher):
            try:
                response: Response = Response(await _answer_body(state, request), media_type=JSON)
            except Exception as exc:
                response, unexpected = await handled(self._app, request, exc)
                if unexpected:  # the app re-raises these after answering, for this log
                    _server_log.error("Exception in ASGI application\n", exc_info=exc)
        # As the body limit does: an answer sent before the whole body was read closes the
        # connection, rather than reading and discarding the rest to reuse it.
        return DirectAnswer(response, record, not body_done)
