"""Open Inference Protocol requests to image+text items, and probabilities to its outputs.

``BYTES`` elements: in binary data (the ``binary_data_tensor`` extension), ``image``
elements are encoded image files and ``text`` elements UTF-8 text. In JSON, a ``text``
element is a string; an ``image`` element is the file in base64 (a string, as a client
that can only send UTF-8 strings must send it, or a ``{"b64": "..."}`` object).

Either input may be left out (every item then misses that modality), not both; an empty
``text`` element is no text. With ``parameters: {"explain": "modality"}`` the response
also holds the explanation's outputs (:data:`EXPLAIN_OUTPUTS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from service.errors import BadRequest, MissingModalities, PayloadTooLarge
from service.serving.api.v2.codec import Element, bytes_elements, serialize_bytes
from service.serving.api.v2.schemas import InferRequest, ResponseOutput
from service.serving.dataplane.explain import EXPLAIN_METHODS, Explain, effect
from service.serving.dataplane.items import Item, check_text, decode_b64, make_item

IMAGE, TEXT, PROBABILITIES = "image", "text", "probabilities"

EXPLAIN_OUTPUTS = {
    "probabilities_image_only": "FP32 [N, C]: the text blanked",
    "probabilities_text_only": "FP32 [N, C]: the image blanked",
    "probability_change_without_image": "FP32 [N]: the top class's probability without the "
    "image minus with it",
    "probability_change_without_text": "FP32 [N]: the same, without the text",
    "top_class_changes_without_image": "BOOL [N]: whether the top class changes without it",
    "top_class_changes_without_text": "BOOL [N]: the same, without the text",
}
"""The outputs ``explain=modality`` adds, beside ``probabilities`` (the input as sent)."""

_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.bool_): "BOOL"}


def request_explain(request: InferRequest) -> Explain | None:
    """The request's ``parameters.explain``: None, or one of :data:`EXPLAIN_METHODS`."""
    value = (request.parameters or {}).get("explain")
    if value is None:
        return None
    for method in EXPLAIN_METHODS:
        if value == method:
            return method
    known = ", ".join(repr(m) for m in EXPLAIN_METHODS)
    raise BadRequest(f"unknown explain {value!r}: this server explains by {known}")


def explanation_tensors(explained: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of an explained request, by name, from its ``[N, 3, C]`` probabilities
    (full, image only, text only)."""
    without_image = [effect(rows[0], rows[2]) for rows in explained]
    without_text = [effect(rows[0], rows[1]) for rows in explained]
    return {
        PROBABILITIES: explained[:, 0],
        "probabilities_image_only": explained[:, 1],
        "probabilities_text_only": explained[:, 2],
        "probability_change_without_image": np.array(
            [e.probability_change for e in without_image], np.float32
        ),
        "probability_change_without_text": np.array(
            [e.probability_change for e in without_text], np.float32
        ),
        "top_class_changes_without_image": np.array(
            [e.top_class_changes for e in without_image], np.bool_
        ),
        "top_class_changes_without_text": np.array(
            [e.top_class_changes for e in without_text], np.bool_
        ),
    }


def request_items(
    request: InferRequest, binary: bytes, max_items: int, max_text_chars: int
) -> list[Item]:
    """The request's image+text pairs, one per element of the ``image`` and ``text`` inputs
    (either may be left out)."""
    names = [tensor.name for tensor in request.inputs]
    if not names:
        raise MissingModalities("no inputs: send 'image', 'text' or both")
    if len(set(names)) != len(names) or not set(names) <= {IMAGE, TEXT}:
        raise BadRequest(f"expected the inputs 'image' and 'text' at most once each, got {names}")
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
    images, texts = elements.get(IMAGE), elements.get(TEXT)
    if images is not None and texts is not None and len(images) != len(texts):
        raise BadRequest(f"{len(images)} images but {len(texts)} texts: send one text per image")
    count = len(images if images is not None else texts or [])
    if not count:
        raise BadRequest("the inputs hold no elements: send at least one image+text pair")
    if count > max_items:
        raise PayloadTooLarge(f"the request holds {count} items; the limit is {max_items}")
    items = []
    for i in range(count):
        where = f"element {i}: "
        text = None if texts is None else _text(texts[i], where)
        if text is not None:
            check_text(text, max_text_chars, where)
        image = None if images is None else _image(images[i], where)
        items.append(make_item(image, text, where))
    return items


def response_outputs(
    request: InferRequest, tensors: dict[str, np.ndarray], labels: Sequence[str]
) -> tuple[list[ResponseOutput], list[bytes]]:
    """The requested outputs among ``tensors`` (all when none are named) and, in order,
    their binary data."""
    binary_default = bool((request.parameters or {}).get("binary_data_output", False))
    requested = request.outputs if request.outputs is not None else []
    wanted = [(o.name, o.parameters or {}) for o in requested] or [(n, {}) for n in tensors]
    outputs: list[ResponseOutput] = []
    binary: list[bytes] = []
    for name, parameters in wanted:
        if name not in tensors:
            raise BadRequest(_unknown_output(name, tensors))
        values = tensors[name]
        as_binary = bool(parameters.get("binary_data", binary_default))
        k = parameters.get("classification")
        if k is None:
            output, raw = _tensor(name, values, as_binary)
        elif values.ndim == 2:
            output, raw = _classification(name, values, labels, k, as_binary)
        else:
            raise BadRequest(f"output {name!r} is not probabilities: it has no classification")
        outputs.append(output)
        if raw is not None:
            binary.append(raw)
    return outputs, binary


def _unknown_output(name: str, tensors: dict[str, np.ndarray]) -> str:
    if name in EXPLAIN_OUTPUTS:
        return f"output {name!r} needs parameters.explain = 'modality'"
    return f"unknown output {name!r}: this request has {', '.join(map(repr, tensors))}"


def _tensor(name: str, values: np.ndarray, as_binary: bool) -> tuple[ResponseOutput, bytes | None]:
    datatype = _DATATYPES[values.dtype]
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    shape = list(values.shape)
    if as_binary:
        raw = values.tobytes()  # BOOL: one byte per element, as the protocol has it
        params = {"binary_data_size": len(raw)}
        return ResponseOutput(name=name, shape=shape, datatype=datatype, parameters=params), raw
    data = values.ravel().tolist()
    return ResponseOutput(name=name, shape=shape, datatype=datatype, data=data), None


def _classification(
    name: str, probabilities: np.ndarray, labels: Sequence[str], k: object, as_binary: bool
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
        return ResponseOutput(name=name, shape=shape, datatype="BYTES", parameters=params), raw
    return ResponseOutput(name=name, shape=shape, datatype="BYTES", data=rows), None


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
