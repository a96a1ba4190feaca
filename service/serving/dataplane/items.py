"""What every request body shares: media types, the image+text item, the text limit."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.errors import TextTooLong, UnprocessableInput, UnsupportedMediaType

MULTIPART = "multipart/form-data"
JSON = "application/json"


@dataclass(frozen=True)
class Item:
    """One encoded image file with its text."""

    image: bytes
    text: str


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower-case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def unsupported(request: Request, *accepted: str) -> UnsupportedMediaType:
    """The 415 error for a body of a type this endpoint does not take."""
    got = media_type(request) or "no content type"
    return UnsupportedMediaType(f"expected {' or '.join(accepted)}, got {got}")


def check_text(text: str, max_chars: int, where: str = "") -> None:
    """Refuse a text longer than ``max_chars`` characters, or one that is not valid Unicode."""
    if len(text) > max_chars:
        raise TextTooLong(f"{where}the text has {len(text)} characters; the limit is {max_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A JSON "\ud800" escape decodes to a lone surrogate, which the model's string
        # tensor cannot hold: refuse it here rather than fail inside the model call.
        raise UnprocessableInput(
            f"{where}the text is not valid Unicode: {exc.reason} at character {exc.start}"
        ) from None
