"""``GET /v1/models``, ``GET /v1/models/{name}``: what is served and how to call it;
``POST /v1/models/{name}/reload``: serve the newest version now."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.errors import NotFound
from service.serving.api.deps import ReloaderDep, RuntimeDep
from service.serving.api.errors import error_responses
from service.serving.api.v1.schemas import ModelDescription, ModelList, ReloadResponse, TensorSpec
from service.serving.inference.classifier import Classifier
from service.serving.worker_state import WorkerGroup

router = APIRouter(prefix="/v1/models", tags=["models"])


def describe_model(classifier: Classifier) -> ModelDescription:
    """Describe a loaded classifier."""
    h, w = classifier.image_size
    meta = classifier.metadata
    return ModelDescription(
        name=classifier.name,
        version=classifier.version,
        labels=list(classifier.labels),
        device=classifier.device,
        inputs=[
            TensorSpec(
                name="image",
                dtype="float32",
                shape=[-1, h, w, 3],
                description="RGB pixels 0..255 after decoding any image file and stretching "
                "it to the model's size (the API does this for uploaded files).",
            ),
            TensorSpec(
                name="text",
                dtype="string",
                shape=[-1],
                description="Raw text; the model normalises and tokenises it ('' = no text).",
            ),
        ],
        outputs=[
            TensorSpec(
                name="probabilities",
                dtype="float32",
                shape=[-1, len(classifier.labels)],
                description="Softmax over the labels, in label order.",
            )
        ],
        metrics=dict(meta.metrics),
        created_at=meta.created_at,
        framework=dict(meta.framework),
    )


@router.get(
    "", summary="List the served models", response_model=ModelList, responses=error_responses(503)
)
async def list_models(runtime: RuntimeDep) -> ModelList:
    """Every model this server holds (one per process)."""
    return ModelList(models=[describe_model(runtime.classifier)])


@router.get(
    "/{name}",
    summary="Describe one model",
    response_model=ModelDescription,
    responses=error_responses(404, 503),
)
async def get_model(name: str, runtime: RuntimeDep) -> ModelDescription:
    """Labels, device, input and output signature, metrics and provenance of a model."""
    if name != runtime.classifier.name:
        raise NotFound(f"model {name!r} is not served here (serving {runtime.classifier.name!r})")
    return describe_model(runtime.classifier)


@router.post(
    "/{name}/reload",
    summary="Serve the newest version of a model now",
    response_model=ReloadResponse,
    responses=error_responses(404, 409, 503),
)
async def reload_model(name: str, request: Request, reloader: ReloaderDep) -> ReloadResponse:
    """Load the newest version in the model store beside the served one, verify it against
    its golden examples, and swap it in; requests in flight finish on the old version.

    ``reloaded`` is false when the served version is already the newest (or is pinned).
    409 when newer versions exist but none loads and verifies: the served one stays, and a
    rejected version is not tried again. The watcher (``reload_poll_s``) does the same on
    its own. With several worker processes, every worker checks the store too.
    """
    served = reloader.served.name
    if name != served:
        raise NotFound(f"model {name!r} is not served here (serving {served!r})")
    outcome = await reloader.reload()
    workers = request.app.state.workers
    if isinstance(workers, WorkerGroup):
        workers.reload_all()  # the other worker processes check the store too
    return ReloadResponse(
        model=outcome.model,
        version=outcome.version,
        previous_version=outcome.previous_version,
        reloaded=outcome.reloaded,
        message=outcome.message,
    )
