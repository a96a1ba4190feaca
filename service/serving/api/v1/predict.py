"""``POST /v1/predict`` (one image+text pair) and ``POST /v1/predict/batch``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.errors import UnprocessableInput
from service.serving.api.deps import RuntimeDep, SettingsDep
from service.serving.api.errors import error_responses
from service.serving.api.media import JSON, MULTIPART, media_type, unsupported
from service.serving.api.openapi import request_body
from service.serving.api.v1.json_batch import read_json_batch
from service.serving.api.v1.multipart import form_items, form_top_k, read_form
from service.serving.api.v1.results import rank
from service.serving.api.v1.schemas import (
    BatchForm,
    BatchPredictResponse,
    BatchRequest,
    PredictForm,
    PredictResponse,
)
from service.serving.dataplane.items import Item
from service.serving.dataplane.predict import predict_items
from service.serving.inference.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["predict"])

TopK = Annotated[
    int | None,
    Query(ge=1, description="Return only the k most probable classes (a form field wins)."),
]

# Stray repeated parts on the single endpoint get a 422 rather than a 413.
_SINGLE_MAX_PARTS = 16


async def _run(runtime: Runtime, items: list[Item], top_k: int | None) -> BatchPredictResponse:
    classifier = runtime.classifier
    probabilities = await predict_items(runtime, items)
    rows: list[list[float]] = probabilities.tolist()
    return BatchPredictResponse(
        model=classifier.name,
        version=classifier.version,
        results=[rank(row, classifier.labels, top_k) for row in rows],
    )


@router.post(
    "/predict",
    summary="Classify one image with its text",
    response_model=PredictResponse,
    responses=error_responses(400, 413, 415, 422, 503, 504),
    openapi_extra=request_body({MULTIPART: PredictForm}),
)
async def predict(
    request: Request, runtime: RuntimeDep, settings: SettingsDep, top_k: TopK = None
) -> PredictResponse:
    """Class probabilities for a multipart ``image`` file and ``text`` field.

    Example: ``curl -F image=@cat.jpg -F text="a small cat" http://localhost:8000/v1/predict``
    """
    if media_type(request) != MULTIPART:
        raise unsupported(request, MULTIPART)
    async with read_form(request, _SINGLE_MAX_PARTS) as form:
        items = await form_items(form, settings.max_text_chars)
        top_k = form_top_k(form, top_k)
    if len(items) > 1:
        raise UnprocessableInput(
            f"{len(items)} image+text pairs sent: send one, or use /v1/predict/batch"
        )
    answer = await _run(runtime, items, top_k)
    result = answer.results[0]
    return PredictResponse(
        model=answer.model,
        version=answer.version,
        label=result.label,
        predictions=result.predictions,
    )


@router.post(
    "/predict/batch",
    summary="Classify several image+text pairs in one model call",
    response_model=BatchPredictResponse,
    responses=error_responses(400, 413, 415, 422, 503, 504),
    openapi_extra=request_body({MULTIPART: BatchForm, JSON: BatchRequest}),
)
async def predict_batch(
    request: Request, runtime: RuntimeDep, settings: SettingsDep, top_k: TopK = None
) -> BatchPredictResponse:
    """Results in request order for repeated multipart ``image``/``text`` parts (paired by
    order) or a JSON body ``{"instances": [{"image": {"b64": ...}, "text": ...}]}``.

    At most ``max_batch_items`` pairs; all images are decoded concurrently, then the model
    runs once for the whole batch.
    """
    limit = settings.max_batch_items
    kind = media_type(request)
    if kind == MULTIPART:
        async with read_form(request, limit) as form:
            items = await form_items(form, settings.max_text_chars)
            top_k = form_top_k(form, top_k)
    elif kind == JSON:
        items, json_top_k = await read_json_batch(request, limit, settings.max_text_chars)
        top_k = json_top_k if json_top_k is not None else top_k
    else:
        raise unsupported(request, MULTIPART, JSON)
    return await _run(runtime, items, top_k)
