"""The wire format of the Open Inference Protocol: a JSON header, optionally followed by
binary tensor data (the ``binary_data_tensor`` extension).

With the extension the body is ``<JSON><tensor bytes>...``; the header
``Inference-Header-Content-Length`` says how long the JSON part is, and each tensor whose
data is binary says how many bytes it takes (``parameters.binary_data_size``), in the order
of the tensors in the JSON. A ``BYTES`` tensor in binary is its elements one after the
other, each a 4-byte little-endian length followed by that many bytes; a numeric tensor is
its elements in row-major order, little-endian.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from service.errors import BadRequest
from service.serving.api.errors import validation_message
from service.serving.api.v2.schemas import InferRequest, InferResponse, RequestInput
from service.serving.dataplane.items import decode_b64

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The request and response header giving the length of the JSON part of the body."""

Element = bytes | str
"""A ``BYTES`` element: bytes from binary data or a ``{"b64"}`` object, text from a JSON string."""

_LENGTH = struct.Struct("<I")


def parse_request(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The request's JSON part, validated, and its binary section (``b""`` when none)."""
    if header_length is None:
        head, binary = body, b""
    else:
        size = header_length.strip()
        if not (size.isascii() and size.isdigit()) or int(size) > len(body):
            raise BadRequest(
                f"{HEADER_LENGTH} must be a byte count within the {len(body)}-byte body, "
                f"got {header_length[:40]!r}"
            )
        head, binary = body[: int(size)], body[int(size) :]
    try:
        data = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the inference request is not valid JSON: {exc}") from exc
    try:
        return InferRequest.model_validate(data), binary
    except ValidationError as exc:
        raise BadRequest(
            f"invalid inference request: {validation_message(exc.errors(include_url=False))}"
        ) from exc


def bytes_elements(inputs: Sequence[RequestInput], binary: bytes) -> dict[str, list[Element]]:
    """Every ``BYTES`` input's elements by input name, from JSON or the binary section.

    Binary data is taken in the order of the inputs; its sizes must add up to the section.
    """
    elements: dict[str, list[Element]] = {}
    offset = 0
    for tensor in inputs:
        if tensor.datatype != "BYTES":
            raise BadRequest(
                f"input {tensor.name!r} has datatype {tensor.datatype}; expected BYTES"
            )
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            elements[tensor.name] = _json_elements(tensor)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"input {tensor.name!r}: binary_data_size must be an integer >= 0")
        if offset + size > len(binary):
            raise BadRequest(
                f"input {tensor.name!r} declares {size} bytes of binary data but only "
                f"{len(binary) - offset} remain after the JSON header"
            )
        elements[tensor.name] = list(deserialize_bytes(binary[offset : offset + size], tensor.name))
        offset += size
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes after the JSON header belong to no input "
            f"(check {HEADER_LENGTH} and binary_data_size)"
        )
    return elements


def deserialize_bytes(raw: bytes, name: str = "") -> Iterable[bytes]:
    """The elements of a binary ``BYTES`` tensor (4-byte little-endian length + bytes each)."""
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise BadRequest(f"input {name!r}: binary BYTES data ends inside an element length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise BadRequest(f"input {name!r}: a binary BYTES element runs past its data")
        yield raw[offset : offset + length]
        offset += length


def serialize_bytes(elements: Iterable[bytes]) -> bytes:
    """A binary ``BYTES`` tensor: each element as a 4-byte little-endian length + bytes."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def encode_response(response: InferResponse, binary: Sequence[bytes]) -> tuple[bytes, int | None]:
    """The response body and, when binary data follows the JSON, the JSON part's length."""
    head = response.model_dump_json(exclude_none=True).encode()
    if not binary:
        return head, None
    return head + b"".join(binary), len(head)


def _json_elements(tensor: RequestInput) -> list[Element]:
    if tensor.data is None:
        raise BadRequest(f"input {tensor.name!r} has neither data nor binary_data_size")
    elements: list[Element] = []
    for i, value in enumerate(_flatten(tensor.data)):
        if isinstance(value, str):
            elements.append(value)
        elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            elements.append(decode_b64(value["b64"], f"input {tensor.name!r} element {i}: "))
        else:
            raise BadRequest(
                f'input {tensor.name!r} element {i} must be a string or {{"b64": "..."}}, '
                f"got {type(value).__name__}"
            )
    return elements


def _flatten(data: Any) -> Iterable[Any]:
    """Row-major elements of a flat or nested JSON array (the protocol allows both)."""
    if not isinstance(data, list):
        raise BadRequest(f"tensor data must be a JSON array, got {type(data).__name__}")
    for value in data:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value
