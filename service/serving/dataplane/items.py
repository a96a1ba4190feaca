"""What every protocol decodes a request into: image+text items, with the text limit and
base64 decoding shared by the JSON bodies of v1 and v2.

Either modality may be missing, never both. An omitted (or null) image or text is missing,
and so is an empty text (``""``, the trained blank itself); an empty image file is not
"no image" but a file that cannot be decoded (400 ``invalid_image``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from service.errors import InvalidBase64, MissingModalities, TextTooLong, UnprocessableInput


@dataclass(frozen=True)
class Item:
    """One image+text pair; a missing modality is None and is replaced by the model's
    trained blank (see metadata ``preprocessing``)."""

    image: bytes | None
    text: str | None


def modalities(item: Item) -> str:
    """``"image+text"``, ``"image"`` or ``"text"``: what the request sent."""
    if item.image is None:
        return "text"
    if item.text is None:
        return "image"
    return "image+text"


def make_item(image: bytes | None, text: str | None, where: str = "") -> Item:
    """An item from what a request sent: an empty text counts as no text, and an item
    without either modality is refused (:class:`MissingModalities`)."""
    if text == "":
        text = None
    if image is None and text is None:
        raise MissingModalities(
            f"{where}neither an image nor a text: send at least one of them (an empty text "
            "counts as none)"
        )
    return Item(image, text)


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


def decode_b64(data: str, where: str = "") -> bytes:
    """Bytes from standard or URL-safe base64, with or without padding."""
    text = "".join(data.split())
    alphabet = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"{where}image.b64 is not valid base64: {exc}") from exc
