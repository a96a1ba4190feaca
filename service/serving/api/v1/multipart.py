"""Reading ``multipart/form-data`` bodies: ``image`` file parts, ``text`` parts, ``top_k``
(either modality's parts may be left out, not both).

Bodies go through python-multipart's parser as they arrive, straight into bytes in
memory, without Starlette's form layer (an upload file object per part, spooled to disk
past 1 MiB): what a request can hold is already bounded by ``MMSERVE_MAX_REQUEST_BYTES``
and the number of requests in flight. For the bench's 13 KiB request, parsing costs about
42 us of CPU this way, against 71 us through Starlette's ``MultiPartParser``.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

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
MAX_FIELD_BYTES = 1024 * 1024
"""Largest text (non-file) part: 413 above it."""


@dataclass(frozen=True, slots=True)
class Part:
    """One part of the body: a file (its Content-Disposition has a ``filename``; ``data``
    holds its bytes) or a field (``text`` holds its value, decoded in the charset its
    Content-Type names, UTF-8 when it names none)."""

    name: str
    data: bytes
    text: str | None = None

    @property
    def is_file(self) -> bool:
        return self.text is None


class Form:
    """A parsed body's parts, in the order they came."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts

    def getlist(self, name: str) -> list[Part]:
        return [part for part in self.parts if part.name == name]

    def get(self, name: str) -> Part | None:
        return next((part for part in self.parts if part.name == name), None)


class _Reader:
    """Parts out of a body fed chunk by chunk (python-multipart's parser, called directly),
    with the per-body limits."""

    def __init__(self, content_type: str, max_items: int) -> None:
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if not boundary:
            raise BadRequest("malformed multipart body: no boundary in the Content-Type header")
        self._max_items = max_items
        self._files = 0
        self._fields = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._charset = "utf-8"
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = False
        self.parts: list[Part] = []
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value_data,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                    "on_end": self._end,
                },
            )
        except FormParserError as exc:  # e.g. a boundary longer than the standard allows
            raise BadRequest(f"malformed multipart body: {exc}") from None

    def feed(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> None:
        if not self._complete:
            raise BadRequest("malformed multipart body: it ends before its closing boundary")

    def _part_begin(self) -> None:
        self._headers = {}
        self._chunks = []
        self._size = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise BadRequest(
                "malformed multipart body: a part without a form-data Content-Disposition naming it"
            )
        self._name = name.decode("utf-8", "replace")
        self._is_file = b"filename" in options
        if self._is_file:
            self._files += 1
            if self._files > self._max_items:
                raise PayloadTooLarge(
                    f"at most {self._max_items} items per request: more file parts than that"
                )
        else:
            self._fields += 1
            if self._fields > self._max_items + _SPARE_FIELDS:
                raise PayloadTooLarge(
                    f"at most {self._max_items} items per request: "
                    f"more than {self._max_items + _SPARE_FIELDS} fields"
                )
            content_type = self._headers.get(b"content-type")
            charset = (
                parse_options_header(content_type)[1].get(b"charset") if content_type else None
            )
            self._charset = charset.decode("latin-1") if charset else "utf-8"

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if not self._is_file and self._size > MAX_FIELD_BYTES:
            raise PayloadTooLarge(
                f"a text part is too large: more than {MAX_FIELD_BYTES // 1024} KiB"
            )
        self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        data = b"".join(self._chunks)  # one chunk (the usual case) is returned as it is
        if self._is_file:
            self.parts.append(Part(self._name, data))
            return
        try:
            text = data.decode(self._charset)
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"the {self._name!r} part is not valid {self._charset}: {exc.reason} "
                f"at byte {exc.start}; send text as UTF-8"
            ) from None
        except LookupError:
            raise BadRequest(
                f"the {self._name!r} part names an unknown charset {self._charset!r}; "
                "send text as UTF-8"
            ) from None
        self.parts.append(Part(self._name, b"", text))

    def _end(self) -> None:
        self._complete = True


async def read_form(request: Request, max_items: int) -> Form:
    """Parse a multipart body of at most ``max_items`` files (and that many texts, plus a
    few spare fields). Raises :class:`BadRequest` for a body that is not valid multipart or
    a text part not valid in its charset, :class:`PayloadTooLarge` past a limit."""
    reader = _Reader(request.headers.get("content-type", ""), max_items)
    try:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                if chunk:
                    reader.feed(chunk)
    except FormParserError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    reader.finish()
    return Form(reader.parts)


def form_items(form: Form, max_text_chars: int) -> list[Item]:
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
        text_part = texts[i] if texts else None
        if file is not None and not file.is_file:
            raise UnprocessableInput(f"{where}'image' must be a file part, not a text field")
        text = None
        if text_part is not None:
            if text_part.text is None:
                raise UnprocessableInput(f"{where}'text' must be a text field, not a file")
            text = text_part.text
            check_text(text, max_text_chars, where)
        items.append(make_item(None if file is None else file.data, text, where))
    return items


def form_top_k(form: Form, default: int | None) -> int | None:
    """The ``top_k`` form field when there is one, else ``default`` (the query parameter)."""
    part = form.get("top_k")
    if part is None:
        return default
    value = part.text
    top_k = int(value) if value is not None and value.strip().isdigit() else 0
    if top_k < 1:
        raise UnprocessableInput(f"top_k must be an integer >= 1, got {value!r}")
    return top_k
