"""``POST /v1/predict`` for the common request, without FastAPI's per-request machinery.

The FastAPI route (:func:`service.serving.api.v1.predict.predict`) stays the documented one
and answers every request this route leaves to it. This route is matched first and takes a
request only when the route's dependencies and parameters have nothing to decide: a POST
to ``/v1/predict`` with no query string, while no API key is configured, the models are
loaded and the service is not draining. It then runs the same steps as the FastAPI route
(:func:`~service.serving.api.v1.predict.predict_one` on the default model's runtime, held
with :func:`~service.serving.api.deps.holding`) and sends the same JSON, but skips
dependency solving, the response's validation and the exit stacks: about 0.35 ms of CPU
per request on the development machine, where a request costs about 2 ms in all.

Errors raised on the way reach the app's exception handlers as they do from any route:
the same status and error body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from service.serving.api.deps import holding
from service.serving.api.media import JSON
from service.serving.api.state import app_state
from service.serving.api.v1.predict import predict_one
from service.serving.api.v1.schemas import PredictResponse

PATH = "/v1/predict"
_SERIALIZER = PredictResponse.__pydantic_serializer__


class PlainPredictRoute(Route):
    """See the module's docstring. Kept out of the OpenAPI document: the FastAPI route
    documents the endpoint."""

    def __init__(self) -> None:
        super().__init__(PATH, endpoint=self._answer, methods=["POST"], include_in_schema=False)
        self.app = self._answer  # an ASGI app, not a request -> response function

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"]:
            return Match.NONE, {}
        state = app_state(scope["app"])
        settings = state.settings
        if settings is None or settings.api_key_set or state.registry is None or state.draining:
            return Match.NONE, {}  # the FastAPI route's dependencies answer these
        match, child_scope = super().matches(scope)
        if match is Match.FULL:
            child_scope["route"] = self  # as FastAPI's routes do: metrics and log read it
        return match, child_scope

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = app_state(scope["app"])
        assert state.settings is not None and state.registry is not None  # see matches
        request = Request(scope, receive)
        with holding(state.registry.default().route()) as runtime:
            answer = await predict_one(request, runtime, state.settings, top_k=None)
        # As FastAPI sends the route's response model (response_model_exclude_none).
        body = _SERIALIZER.to_json(answer, exclude_none=True, by_alias=True)
        await Response(body, media_type=JSON)(scope, receive, send)
