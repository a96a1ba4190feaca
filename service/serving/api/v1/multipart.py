"""Reading ``multipart/form-data`` bodies: ``image`` file parts, ``text`` parts, ``top_k``
(either modality's parts may be left out, not both)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import (
    BadRequest,
    MissingModalities,
    PayloadTooLarge,
    UnpairedParts,
    UnprocessableInput,
)
from service.serving.dataplane.items import Item, check_text, make_item

# Room for `top_k` and stray fields beside the image and text parts.
_SPARE_FIELDS = 8


class _StrictTextParser(MultiPartParser):
    """Starlette's multipart parser, except that a text part that is not valid in the body's
    charset (UTF-8 unless the Content-Type says otherwise) is a 400.

    Starlette silently reads such a part as Latin-1, which would hand the model mojibake.
    This relies on two attributes of Starlette's parser (``_current_part``, ``_charset``);
    tests/api/test_limits.py fails loudly should they change.
    """

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset)
            except UnicodeDecodeError as exc:
                raise BadRequest(
                    f"the {part.field_name!r} part is not valid {self._charset}: {exc.reason} "
                    f"at byte {exc.start}; send text as UTF-8"
                ) from None
        super().on_part_end()


@asynccontextmanager
async def read_form(request: Request, max_items: int) -> AsyncIterator[FormData]:
    """Parse a multipart body of at most ``max_items`` files; close its files on exit."""
    try:
        async with aclosing(request.stream()) as stream:
            parser = _StrictTextParser(
                request.headers, stream, max_files=max_items, max_fields=max_items + _SPARE_FIELDS
            )
            form = await parser.parse()
    except MultiPartException as exc:
        # Starlette words its limits (parts per body, bytes per text part) like this.
        if exc.message.startswith("Too many"):
            raise PayloadTooLarge(f"at most {max_items} items per request: {exc.message}") from exc
        if exc.message.startswith("Part exceeded"):
            raise PayloadTooLarge(f"a text part is too large: {exc.message}") from exc
        raise BadRequest(f"malformed multipart body: {exc.message}") from exc
    try:
        yield form
    finally:
        await form.close()


async def form_items(form: FormData, max_text_chars: int) -> list[Item]:
    """The ``image`` file parts paired by order with the ``text`` parts; without any
    ``image`` part every item is text only, without any ``text`` part image only."""
    files = form.getlist("image")
    texts = form.getlist("text")
    if not files and not texts:
        raise MissingModalities(
            "neither an 'image' nor a 'text' part: send an image file part, a text part, or both"
        )
    if files and texts and len(files) != len(texts):
        raise UnpairedParts(
            f"{len(files)} 'image' parts but {len(texts)} 'text' parts: send one text per image"
        )
    count = max(len(files), len(texts))
    items = []
    for i in range(count):
        where = f"item {i}: " if count > 1 else ""
        file = files[i] if files else None
        text = texts[i] if texts else None
        if file is not None and not isinstance(file, UploadFile):
            raise UnprocessableInput(f"{where}'image' must be a file part, not a text field")
        if text is not None and not isinstance(text, str):
            raise UnprocessableInput(f"{where}'text' must be a text field, not a file")
        if text is not None:
            check_text(text, max_text_chars, where)
        image = None if file is None else await file.read()
        items.append(make_item(image, text, where))
    return items


def form_top_k(form: FormData, default: int | None) -> int | None:
    """The ``top_k`` form field when there is one, else ``default`` (the query parameter)."""
    value = form.get("top_k")
    if value is None:
        return default
    top_k = int(value) if isinstance(value, str) and value.strip().isdigit() else 0
    if top_k < 1:
        raise UnprocessableInput(f"top_k must be an integer >= 1, got {value!r}")
    return top_k
