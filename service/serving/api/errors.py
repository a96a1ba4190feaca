"""Every error leaves the API as ``{"error": {"code", "message"}}`` with its HTTP status."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from service.errors import ServiceError, ServiceUnavailable, UnprocessableInput
from service.serving.api.v1.schemas import ErrorResponse
from service.serving.metrics import count_refusal

log = logging.getLogger("mmserve.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: UnprocessableInput.code,
}

_DESCRIPTIONS = {
    400: "The image cannot be decoded, or the body is malformed.",
    401: "API keys are configured and the request carries none that matches "
    "(send `Authorization: Bearer <key>` or `X-API-Key: <key>`).",
    403: "Admin keys are configured and the request's key is not one of them: this route "
    "changes what the service serves.",
    404: "No such model, version or label served here.",
    409: "Newer model versions exist but none loads and verifies (the served one stays), "
    "a model to load fails to load or verify, or another worker process could not apply "
    "the change.",
    413: "The body is larger than max_request_bytes, an image declares too many pixels, "
    "or a batch holds too many items.",
    415: "The body has a content type this endpoint does not accept, or an image is in a "
    "format the service does not allow.",
    422: "A field is missing or invalid, or the text is too long.",
    503: "The model is not loaded yet, too many requests are in flight, the queue is full, "
    "or the service is shutting down (see Retry-After). Refused before the body is read.",
    504: "The model did not answer within the request deadline, or (a change to what is "
    "served) another worker process did not apply it within worker_sync_timeout_s.",
}


V2_PREFIX = "/v2"
"""Paths of the Open Inference Protocol, whose errors are ``{"error": "<message>"}``."""


def error_json(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    path: str = "",
) -> JSONResponse:
    """The error body every failure uses (the protocol's own on ``/v2`` paths)."""
    return JSONResponse(error_body(code, message, path), status_code=status, headers=headers)


def error_body(code: str, message: str, path: str = "") -> dict[str, Any]:
    """The JSON of an error answer to ``path``: ``{"error": {"code", "message"}}``, or the
    inference protocol's ``{"error": message}`` on ``/v2`` paths."""
    if path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
        return {"error": message}
    return {"error": {"code": code, "message": message}}


def validation_message(errors: Sequence[Any]) -> str:
    """Validation errors (pydantic's or FastAPI's) as one line: ``where: what; ...``."""
    problems = []
    for err in errors:
        where = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
    return "; ".join(problems)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, ServiceUnavailable):
        count_refusal(exc, "handler")
    return error_json(
        exc.status_code, exc.code, exc.message, exc.headers or None, path=request.url.path
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message = validation_message(exc.errors()) or "invalid request"
    return error_json(422, UnprocessableInput.code, message, path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_json(
        exc.status_code, code, str(exc.detail), dict(exc.headers or {}), path=request.url.path
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # One line only: Starlette re-raises after this response, so the server logs the traceback.
    log.error(
        "unexpected error on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
    )
    return error_json(500, ServiceError.code, "internal server error", path=request.url.path)


async def handled(app: FastAPI, request: Request, exc: Exception) -> tuple[Response, bool]:
    """The answer ``app``'s exception handlers give ``exc`` (the handler of its nearest
    class, as the app's middleware looks it up), for code that calls a route's work outside
    the app (the server's connections, :mod:`service.serving.api.v1.plain`); and whether
    it is the answer to an unexpected error (the handler of ``Exception``), which the app
    re-raises once answered so that the server logs its traceback. An error no handler
    takes is re-raised."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response = handler(request, exc)
            if not isinstance(response, Response):
                response = await response
            assert isinstance(response, Response)
            return response, cls is Exception
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    """Map service, validation, HTTP and unexpected errors to the error body."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
