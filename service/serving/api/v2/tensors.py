"""Open Inference Protocol requests to image+text items, and probabilities to its outputs.

``BYTES`` elements: in binary data (the ``binary_data_tensor`` extension), ``image``
elements are encoded image files and ``text`` elements UTF-8 text. In JSON, a ``text``
element is a string; an ``image`` element is the file in base64 (a string, as a client
that can only send UTF-8 strings must send it, or a ``{"b64": "..."}`` object).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from service.errors import BadRequest, PayloadTooLarge
from service.serving.api.v2.codec import Element, bytes_elements, serialize_bytes
from service.serving.api.v2.schemas import InferRequest, ResponseOutput
from service.serving.dataplane.items import Item, check_text, decode_b64

IMAGE, TEXT, PROBABILITIES = "image", "text", "probabilities"


def request_items(
    request: InferRequest, binary: bytes, max_items: int, max_text_chars: int
) -> list[Item]:
    """The request's image+text pairs, one per element of the ``image`` and ``text`` inputs."""
    names = [tensor.name for tensor in request.inputs]
    if sorted(names) != [IMAGE, TEXT]:
        raise BadRequest(f"expected the inputs 'image' and 'text' once each, got {names}")
    for tensor in request.inputs:
        if any(dim < 0 for dim in tensor.shape):
            raise BadRequest(f"input {tensor.name!r} has a negative dimension: {tensor.shape}")
    elements = bytes_elements(request.inputs, binary)
    for tensor in request.inputs:
        count = math.prod(tensor.shape)
        if len(elements[tensor.name]) != count:
            raise BadRequest(
                f"input {tensor.name!r} has shape {tensor.shape} ({count} elements) but "
                f"{len(elements[tensor.name])} elements of data"
            )
    images, texts = elements[IMAGE], elements[TEXT]
    if len(images) != len(texts):
        raise BadRequest(f"{len(images)} images but {len(texts)} texts: send one text per image")
    if not images:
        raise BadRequest("the inputs hold no elements: send at least one image+text pair")
    if len(images) > max_items:
        raise PayloadTooLarge(f"the request holds {len(images)} items; the limit is {max_items}")
    items = []
    for i, (image, text) in enumerate(zip(images, texts, strict=True)):
        where = f"element {i}: "
        decoded = _text(text, where)
        check_text(decoded, max_text_chars, where)
        items.append(Item(_image(image, where), decoded))
    return items


def response_outputs(
    request: InferRequest, probabilities: np.ndarray, labels: Sequence[str]
) -> tuple[list[ResponseOutput], list[bytes]]:
    """The requested outputs (all when none are named) and, in order, their binary data."""
    binary_default = bool((request.parameters or {}).get("binary_data_output", False))
    requested = request.outputs if request.outputs is not None else []
    wanted = [(o.name, o.parameters or {}) for o in requested] or [(PROBABILITIES, {})]
    outputs: list[ResponseOutput] = []
    binary: list[bytes] = []
    for name, parameters in wanted:
        if name != PROBABILITIES:
            raise BadRequest(f"unknown output {name!r}: this model has 'probabilities'")
        as_binary = bool(parameters.get("binary_data", binary_default))
        k = parameters.get("classification")
        if k is None:
            output, raw = _probabilities(probabilities, as_binary)
        else:
            output, raw = _classification(probabilities, labels, k, as_binary)
        outputs.append(output)
        if raw is not None:
            binary.append(raw)
    return outputs, binary


def _probabilities(
    probabilities: np.ndarray, as_binary: bool
) -> tuple[ResponseOutput, bytes | None]:
    values = np.ascontiguousarray(probabilities, dtype="<f4")
    shape = list(values.shape)
    if as_binary:
        raw = values.tobytes()
        params = {"binary_data_size": len(raw)}
        return ResponseOutput(
            name=PROBABILITIES, shape=shape, datatype="FP32", parameters=params
        ), raw
    data = [float(v) for v in values.ravel()]
    return ResponseOutput(name=PROBABILITIES, shape=shape, datatype="FP32", data=data), None


def _classification(
    probabilities: np.ndarray, labels: Sequence[str], k: object, as_binary: bool
) -> tuple[ResponseOutput, bytes | None]:
    """The classification extension: the top ``k`` classes per item as ``score:index:label``
    strings, highest first (Triton's format; ``k`` beyond the class count gives every class)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadRequest(f"classification must be an integer >= 1, got {k!r}")
    top = min(k, probabilities.shape[1])
    rows: list[str] = []
    for row in probabilities.tolist():
        order = sorted(range(len(row)), key=lambda i: -row[i])[:top]
        rows.extend(f"{row[i]:f}:{i}:{labels[i]}" for i in order)
    shape = [probabilities.shape[0], top]
    if as_binary:
        raw = serialize_bytes(s.encode() for s in rows)
        params = {"binary_data_size": len(raw)}
        return ResponseOutput(
            name=PROBABILITIES, shape=shape, datatype="BYTES", parameters=params
        ), raw
    return ResponseOutput(name=PROBABILITIES, shape=shape, datatype="BYTES", data=rows), None


def _image(element: Element, where: str) -> bytes:
    if isinstance(element, bytes):
        return element
    return decode_b64(element, where)


def _text(element: Element, where: str) -> str:
    if isinstance(element, str):
        return element
    try:
        return element.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"{where}the text is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
