"""The Open Inference Protocol (KServe v2) REST API, beside the native one, so that
``tritonclient.http`` and other v2 clients work unchanged.

Requests take the same decoder, batcher, limits and API keys as ``/v1``; errors use the
protocol's ``{"error": "<message>"}``. Extensions: ``binary_tensor_data`` and
``classification``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from service.errors import NotFound, UnsupportedMediaType
from service.serving.api.deps import RegistryDep, SettingsDep, StateDep, holding
from service.serving.api.errors import error_responses
from service.serving.api.health import check_ready
from service.serving.api.media import JSON
from service.serving.api.openapi import request_body
from service.serving.api.v2.codec import HEADER_LENGTH, encode_response, parse_request
from service.serving.api.v2.schemas import (
    InferRequest,
    InferResponse,
    MetadataTensor,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    V2Error,
    V2ModelMetadata,
)
from service.serving.api.v2.tensors import (
    IMAGE,
    PROBABILITIES,
    TEXT,
    explanation_tensors,
    request_explain,
    request_items,
    response_outputs,
)
from service.serving.dataplane.explain import EXPLAIN_METHODS, explain_items
from service.serving.dataplane.items import Item, modalities
from service.serving.dataplane.modality import modality_support, modality_warnings
from service.serving.dataplane.predict import predict_items
from service.serving.inference.classifier import Classifier
from service.serving.inference.registry import ModelRegistry
from service.serving.inference.runtime import Runtime
from service.serving.settings import Settings

EXTENSIONS = ["binary_tensor_data", "classification"]
PLATFORM = "tensorflow_keras"

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
health_router = APIRouter(prefix="/v2/health", tags=["open inference protocol (v2)"])


def v2_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, in the protocol's error body."""
    return {s: {**entry, "model": V2Error} for s, entry in error_responses(*statuses).items()}


@health_router.get("/live", summary="The process is up (v2)", response_model=ServerLive)
async def server_live() -> ServerLive:
    """Always 200 while the process answers HTTP."""
    return ServerLive()


@health_router.get(
    "/ready",
    summary="Every model is loaded and verified (v2)",
    response_model=ServerReady,
    responses=v2_responses(503),
)
async def server_ready(state: StateDep, registry: RegistryDep) -> ServerReady:
    """200 once every configured model serves; 503 before and at shutdown."""
    check_ready(state, registry)
    return ServerReady()


@router.get("", summary="Server metadata (v2)", response_model=ServerMetadata)
async def server_metadata(request: Request) -> ServerMetadata:
    """The server's name, version and protocol extensions."""
    return ServerMetadata(name="mmserve", version=request.app.version, extensions=EXTENSIONS)


def served(registry: ModelRegistry, name: str, version: str | None) -> Runtime:
    """The runtime of ``name`` (its primary version, or ``version``); 404 when not served."""
    model = registry.get(name)
    if version is None:
        return model.primary()
    if not (version.isascii() and version.isdigit()):
        raise NotFound(f"model {name!r} has no version {version!r} here (serving {model.versions})")
    return model.route(version=int(version))


def model_parameters(classifier: Classifier) -> dict[str, Any]:
    """The metadata's ``parameters``: what a one-modality request is worth (flat scalars,
    as the protocol's parameters are)."""
    support = modality_support(classifier.metadata)
    values: dict[str, Any] = {
        "trained_with_modality_dropout": support.trained_with_dropout,
        "modality_dropout": support.modality_dropout,
        "accuracy": support.accuracy,
        "image_only_accuracy": support.image_only_accuracy,
        "text_only_accuracy": support.text_only_accuracy,
        "optional_inputs": f"{IMAGE},{TEXT}",
        "explain": ",".join(EXPLAIN_METHODS),
    }
    return {key: value for key, value in values.items() if value is not None}


def model_metadata(classifier: Classifier, versions: list[int]) -> V2ModelMetadata:
    """The protocol's description of a classifier: encoded image files and texts in (either
    may be left out), probabilities in label order out."""
    return V2ModelMetadata(
        name=classifier.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[
            MetadataTensor(name=IMAGE, datatype="BYTES", shape=[-1]),
            MetadataTensor(name=TEXT, datatype="BYTES", shape=[-1]),
        ],
        outputs=[
            MetadataTensor(name=PROBABILITIES, datatype="FP32", shape=[-1, len(classifier.labels)])
        ],
        parameters=model_parameters(classifier),
    )


@router.get(
    "/models/{name}",
    summary="Model metadata (v2)",
    response_model=V2ModelMetadata,
    responses=v2_responses(404, 503),
)
async def get_model_metadata(name: str, registry: RegistryDep) -> V2ModelMetadata:
    """Versions served, platform, inputs and outputs of a model."""
    return model_metadata(served(registry, name, None).classifier, registry.get(name).versions)


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model version metadata (v2)",
    response_model=V2ModelMetadata,
    responses=v2_responses(404, 503),
)
async def get_model_version_metadata(
    name: str, version: str, registry: RegistryDep
) -> V2ModelMetadata:
    """As ``/v2/models/{name}``, for one served version."""
    classifier = served(registry, name, version).classifier
    return model_metadata(classifier, [classifier.version])


@router.get(
    "/models/{name}/ready",
    summary="The model is ready (v2)",
    response_model=ModelReady,
    responses=v2_responses(404, 503),
)
async def model_ready(name: str, registry: RegistryDep) -> ModelReady:
    """200 while the model serves; 404 for a model not served here."""
    return ModelReady(name=served(registry, name, None).classifier.name)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="The model version is ready (v2)",
    response_model=ModelReady,
    responses=v2_responses(404, 503),
)
async def model_version_ready(name: str, version: str, registry: RegistryDep) -> ModelReady:
    """200 while this version serves; 404 for any other."""
    return ModelReady(name=served(registry, name, version).classifier.name)


_INFER_DOC: dict[str, Any] = {
    "responses": v2_responses(400, 404, 413, 415, 422, 503, 504),
    "response_model": InferResponse,
    "openapi_extra": request_body({JSON: InferRequest}),
}


async def infer_runtime(name: str, registry: RegistryDep) -> AsyncIterator[Runtime]:
    """Model ``name``'s runtime for an inference, canary split included."""
    with holding(registry.get(name).route()) as runtime:
        yield runtime


async def infer_version_runtime(
    name: str, version: str, registry: RegistryDep
) -> AsyncIterator[Runtime]:
    """The runtime of one served version of ``name``."""
    with holding(served(registry, name, version)) as runtime:
        yield runtime


@router.post("/models/{name}/infer", summary="Classify image+text pairs (v2)", **_INFER_DOC)
async def infer(
    request: Request,
    runtime: Annotated[Runtime, Depends(infer_runtime)],
    settings: SettingsDep,
) -> Response:
    """Probabilities for the ``image`` and ``text`` inputs (``BYTES``, one element per
    pair; either input may be left out, not both), as JSON or binary tensor data, or the
    top classes (``classification``).

    ``parameters: {"explain": "modality"}`` also scores each item with its text blanked and
    with its image blanked, in the same model call (three items' cost), and adds the
    outputs ``probabilities_image_only``, ``probabilities_text_only`` (FP32 [N, C]),
    ``probability_change_without_image``, ``probability_change_without_text`` (FP32 [N]:
    the full input's top class, its probability without the modality minus with it) and
    ``top_class_changes_without_image``, ``top_class_changes_without_text`` (BOOL [N])."""
    return await _infer(request, runtime, settings)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Classify image+text pairs with a model version (v2)",
    **_INFER_DOC,
)
async def infer_version(
    request: Request,
    runtime: Annotated[Runtime, Depends(infer_version_runtime)],
    settings: SettingsDep,
) -> Response:
    """As ``/v2/models/{name}/infer``, for one served version."""
    return await _infer(request, runtime, settings)


async def _infer(request: Request, runtime: Runtime, settings: Settings) -> Response:
    """Parse (off the event loop), predict through the shared batcher, encode."""
    classifier = runtime.classifier
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported")
    body = await request.body()
    # JSON parsing and base64 decoding of large bodies would stall the event loop.
    parsed, items = await asyncio.to_thread(
        _parse, body, request.headers.get(HEADER_LENGTH), settings
    )
    parameters: dict[str, Any] = {"modalities": ",".join(modalities(item) for item in items)}
    if request_explain(parsed) is None:
        tensors = {PROBABILITIES: await predict_items(runtime, items)}
    else:
        tensors = explanation_tensors(await explain_items(runtime, items))
        parameters["explain"] = "modality"
    outputs, binary = response_outputs(parsed, tensors, classifier.labels)
    warnings = modality_warnings(classifier, items)
    if warnings:
        parameters["warnings"] = "; ".join(warnings)
    answer = InferResponse(
        model_name=classifier.name,
        model_version=str(classifier.version),
        id=parsed.id,
        parameters=parameters,
        outputs=outputs,
    )
    content, header_length = encode_response(answer, binary)
    if header_length is None:
        return Response(content, media_type=JSON)
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )


def _parse(
    body: bytes, header_length: str | None, settings: Settings
) -> tuple[InferRequest, list[Item]]:
    parsed, binary = parse_request(body, header_length)
    request_explain(parsed)  # an unknown explain is refused before any image is decoded
    items = request_items(parsed, binary, settings.max_batch_items, settings.max_text_chars)
    return parsed, items
