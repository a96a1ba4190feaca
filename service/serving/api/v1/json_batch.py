"""Reading JSON batches: ``{"instances": [{"image": {"b64": ...}, "text": ...}], "top_k"}``
(an instance may leave out its image or its text, not both)."""

from __future__ import annotations

import asyncio
import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.errors import BadRequest, PayloadTooLarge
from service.serving.api.v1.schemas import BatchRequest
from service.serving.dataplane.items import Item, check_text, decode_b64, make_item


async def read_json_batch(
    request: Request, max_items: int, max_text_chars: int
) -> tuple[list[Item], int | None]:
    """The batch's items in order and its ``top_k``.

    Parsing and base64 decoding run in a worker thread: large bodies would stall the loop.
    """
    body = await request.body()
    return await asyncio.to_thread(parse_json_batch, body, max_items, max_text_chars)


def parse_json_batch(
    body: bytes, max_items: int, max_text_chars: int
) -> tuple[list[Item], int | None]:
    """Validate a JSON batch body and decode its images' base64."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    try:
        batch = BatchRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    if len(batch.instances) > max_items:
        raise PayloadTooLarge(
            f"the batch holds {len(batch.instances)} instances; the limit is {max_items}"
        )
    items = []
    for i, instance in enumerate(batch.instances):
        where = f"instance {i}: "
        if instance.text is not None:
            check_text(instance.text, max_text_chars, where)
        image = None if instance.image is None else decode_b64(instance.image.b64, where)
        items.append(make_item(image, instance.text, where))
    return items, batch.top_k
