"""Predictions: ``POST /v1/predict`` (one image+text pair, the default model) and the
same for a model, a version or a label (``/v1/models/{name}[/versions/{v}|/labels/{l}]``),
each with its ``/batch`` form."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from service.errors import UnprocessableInput
from service.serving.api.deps import (
    DefaultRuntimeDep,
    LabelRuntimeDep,
    ModelRuntimeDep,
    SettingsDep,
    VersionRuntimeDep,
)
from service.serving.api.errors import error_responses
from service.serving.api.media import JSON, MULTIPART, media_type, unsupported
from service.serving.api.openapi import request_body
from service.serving.api.v1.json_batch import read_json_batch
from service.serving.api.v1.multipart import form_items, form_top_k, read_form
from service.serving.api.v1.results import explanation, rank
from service.serving.api.v1.schemas import (
    BatchForm,
    BatchPredictResponse,
    BatchRequest,
    BatchResult,
    Explanation,
    PredictForm,
    PredictResponse,
)
from service.serving.dataplane.explain import Explain, explain_items
from service.serving.dataplane.items import Item, modalities
from service.serving.dataplane.modality import modality_warnings
from service.serving.dataplane.predict import predict_items
from service.serving.inference.runtime import Runtime
from service.serving.settings import Settings

router = APIRouter(prefix="/v1", tags=["predict"])

TopK = Annotated[
    int | None,
    Query(ge=1, description="Return only the k most probable classes (a form field wins)."),
]

# Stray repeated parts on the single endpoint get a 422 rather than a 413.
_SINGLE_MAX_PARTS = 16


ExplainQuery = Annotated[
    Explain | None,
    Query(
        description="'modality': also score each item with its text blanked and with its image "
        "blanked, in the same model call (three items' cost), and say what removing each "
        "modality changes (``explanation``)."
    ),
]


async def _run(
    runtime: Runtime, items: list[Item], top_k: int | None, explain: Explain | None
) -> BatchPredictResponse:
    classifier = runtime.classifier
    labels = classifier.labels
    if explain is None:
        rows = await predict_items(runtime, items)
        explanations: list[Explanation | None] = [None] * len(items)
    else:
        explained = await explain_items(runtime, items)
        rows = explained[:, 0]
        explanations = [explanation(item_rows, labels) for item_rows in explained]
    results = []
    for row, item, why in zip(rows.tolist(), items, explanations, strict=True):
        ranked = rank(row, labels, top_k)
        results.append(
            BatchResult(
                label=ranked.label,
                predictions=ranked.predictions,  # as built: not dumped to dicts and re-read
                modalities=modalities(item),
                explanation=why,
            )
        )
    return BatchPredictResponse(
        model=classifier.name,
        version=classifier.version,
        results=results,
        warnings=modality_warnings(classifier, items),
    )


_PREDICT_DOC: dict[str, Any] = {
    "response_model": PredictResponse,
    "response_model_exclude_none": True,
    "responses": error_responses(400, 404, 413, 415, 422, 503, 504),
    "openapi_extra": request_body({MULTIPART: PredictForm}),
}
_BATCH_DOC: dict[str, Any] = {
    "response_model": BatchPredictResponse,
    "response_model_exclude_none": True,
    "responses": error_responses(400, 404, 413, 415, 422, 503, 504),
    "openapi_extra": request_body({MULTIPART: BatchForm, JSON: BatchRequest}),
}


async def predict_one(
    request: Request,
    runtime: Runtime,
    settings: Settings,
    top_k: int | None,
    explain: Explain | None = None,
) -> PredictResponse:
    """One multipart ``image`` + ``text`` pair (either may be left out) through ``runtime``."""
    if media_type(request) != MULTIPART:
        raise unsupported(request, MULTIPART)
    form = await read_form(request, _SINGLE_MAX_PARTS)
    items = form_items(form, settings.max_text_chars)
    top_k = form_top_k(form, top_k)
    if len(items) > 1:
        raise UnprocessableInput(
            f"{len(items)} image+text pairs sent: send one, or use the /batch route"
        )
    answer = await _run(runtime, items, top_k, explain)
    result = answer.results[0]
    return PredictResponse(
        model=answer.model,
        version=answer.version,
        label=result.label,
        predictions=result.predictions,
        modalities=result.modalities,
        warnings=answer.warnings,
        explanation=result.explanation,
    )


async def predict_many(
    request: Request,
    runtime: Runtime,
    settings: Settings,
    top_k: int | None,
    explain: Explain | None = None,
) -> BatchPredictResponse:
    """Repeated multipart parts or a JSON batch through ``runtime``, in request order."""
    limit = settings.max_batch_items
    kind = media_type(request)
    if kind == MULTIPART:
        form = await read_form(request, limit)
        items = form_items(form, settings.max_text_chars)
        top_k = form_top_k(form, top_k)
    elif kind == JSON:
        items, json_top_k = await read_json_batch(request, limit, settings.max_text_chars)
        top_k = json_top_k if json_top_k is not None else top_k
    else:
        raise unsupported(request, MULTIPART, JSON)
    return await _run(runtime, items, top_k, explain)


@router.post("/predict", summary="Classify one image with its text", **_PREDICT_DOC)
async def predict(
    request: Request,
    runtime: DefaultRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> PredictResponse:
    """Class probabilities for a multipart ``image`` file and ``text`` field, from the
    default model (its canary share included).

    Example: ``curl -F image=@cat.jpg -F text="a small cat" http://localhost:8000/v1/predict``
    """
    return await predict_one(request, runtime, settings, top_k, explain)


@router.post(
    "/predict/batch", summary="Classify several image+text pairs in one model call", **_BATCH_DOC
)
async def predict_batch(
    request: Request,
    runtime: DefaultRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> BatchPredictResponse:
    """Results in request order for repeated multipart ``image``/``text`` parts (paired by
    order) or a JSON body ``{"instances": [{"image": {"b64": ...}, "text": ...}]}``.

    At most ``max_batch_items`` pairs; all images are decoded concurrently, then the model
    runs once for the whole batch.
    """
    return await predict_many(request, runtime, settings, top_k, explain)


@router.post("/models/{name}/predict", summary="Classify with a model", **_PREDICT_DOC)
async def predict_model(
    request: Request,
    runtime: ModelRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> PredictResponse:
    """As ``/v1/predict``, with model ``name`` (its canary share included)."""
    return await predict_one(request, runtime, settings, top_k, explain)


@router.post("/models/{name}/predict/batch", summary="Batch with a model", **_BATCH_DOC)
async def predict_model_batch(
    request: Request,
    runtime: ModelRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> BatchPredictResponse:
    """As ``/v1/predict/batch``, with model ``name``."""
    return await predict_many(request, runtime, settings, top_k, explain)


@router.post(
    "/models/{name}/versions/{version}/predict",
    summary="Classify with a model version",
    **_PREDICT_DOC,
)
async def predict_version(
    request: Request,
    runtime: VersionRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> PredictResponse:
    """As ``/v1/predict``, with one served version of model ``name``."""
    return await predict_one(request, runtime, settings, top_k, explain)


@router.post(
    "/models/{name}/versions/{version}/predict/batch",
    summary="Batch with a model version",
    **_BATCH_DOC,
)
async def predict_version_batch(
    request: Request,
    runtime: VersionRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> BatchPredictResponse:
    """As ``/v1/predict/batch``, with one served version of model ``name``."""
    return await predict_many(request, runtime, settings, top_k, explain)


@router.post(
    "/models/{name}/labels/{label}/predict",
    summary="Classify with a labelled version",
    **_PREDICT_DOC,
)
async def predict_label(
    request: Request,
    runtime: LabelRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> PredictResponse:
    """As ``/v1/predict``, with the version of model ``name`` that ``label`` points to."""
    return await predict_one(request, runtime, settings, top_k, explain)


@router.post(
    "/models/{name}/labels/{label}/predict/batch",
    summary="Batch with a labelled version",
    **_BATCH_DOC,
)
async def predict_label_batch(
    request: Request,
    runtime: LabelRuntimeDep,
    settings: SettingsDep,
    top_k: TopK = None,
    explain: ExplainQuery = None,
) -> BatchPredictResponse:
    """As ``/v1/predict/batch``, with the version ``label`` points to."""
    return await predict_many(request, runtime, settings, top_k, explain)
