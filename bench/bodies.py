"""Ready-to-send request bodies, encoded once per run in each target's wire format.

The load generators share the CPUs with the server under test, so no body is encoded
while load is running: every format is built here, before the first request.

- multipart: the service, the naive and the floor endpoints (``image`` file + ``text``).
- msgpack: mosec (``{"image": <bytes>, "text": <str>}``), its usual binary body.
- Open Inference Protocol JSON: MLServer (``image`` as base64 ``BYTES``, ``text`` ``BYTES``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from bench.inputs import Sample

_BOUNDARY = "mmserve-bench-5f0c2a9e"


@dataclass(frozen=True)
class Payload:
    """A ready-to-send request body and its ``Content-Type``."""

    body: bytes
    content_type: str


def encode_multipart(sample: Sample) -> Payload:
    """``sample`` as ``multipart/form-data`` with an ``image`` file part and a ``text`` field."""

    def part(headers: str, content: bytes) -> bytes:
        return f"--{_BOUNDARY}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"

    body = (
        part(
            f'Content-Disposition: form-data; name="image"; filename="{sample.filename}"\r\n'
            "Content-Type: image/jpeg",
            sample.image,
        )
        + part('Content-Disposition: form-data; name="text"', sample.text.encode())
        + f"--{_BOUNDARY}--\r\n".encode()
    )
    return Payload(body, f"multipart/form-data; boundary={_BOUNDARY}")


def encode_msgpack(sample: Sample) -> Payload:
    """``sample`` as a msgpack map ``{"image": bin, "text": str}`` (mosec's binary body)."""
    import msgpack

    body = msgpack.packb({"image": sample.image, "text": sample.text}, use_bin_type=True)
    return Payload(body, "application/msgpack")


def encode_v2_json(sample: Sample) -> Payload:
    """``sample`` as an Open Inference Protocol request: one ``BYTES`` element per input,
    the image base64-encoded (JSON carries no raw bytes)."""
    request = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(sample.image).decode("ascii")],
            },
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": [sample.text]},
        ]
    }
    return Payload(json.dumps(request).encode(), "application/json")


def write(payloads: list[Payload], folder: Path) -> list[Path]:
    """Write each body to its own file in ``folder`` (for wrk's Lua script to load)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, payload in enumerate(payloads):
        path = folder / f"body-{i:03d}.bin"
        path.write_bytes(payload.body)
        paths.append(path)
    return paths
