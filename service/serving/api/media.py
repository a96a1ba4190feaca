"""Request media types: what a body is, and the 415 for one an endpoint does not take."""

from __future__ import annotations

from fastapi import Request

from service.errors import UnsupportedMediaType

MULTIPART = "multipart/form-data"
JSON = "application/json"


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower-case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def unsupported(request: Request, *accepted: str) -> UnsupportedMediaType:
    """The 415 error for a body of a type this endpoint does not take."""
    got = media_type(request) or "no content type"
    return UnsupportedMediaType(f"expected {' or '.join(accepted)}, got {got}")
