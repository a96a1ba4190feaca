"""The native model API: what is served and how to call it (``GET /v1/models[/{name}]``),
hot reload, labels and canary traffic, and loading and unloading models.

Everything here but the ``GET``s changes what the service serves: those routes need an
admin key when admin keys are configured (:mod:`service.serving.api.auth`), or keep them
from ordinary clients with a proxy that only lets ``/v1/predict`` and
``/v1/models/{name}/.../predict`` through. With several worker processes each change is
answered once every worker has applied it (:mod:`service.serving.worker_sync`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.errors import UnprocessableInput
from service.preprocessing import BLANK_IMAGE
from service.serving.api.auth import RequireAdminKey
from service.serving.api.deps import RegistryDep, StateDep
from service.serving.api.errors import error_responses
from service.serving.api.state import AppState
from service.serving.api.v1.schemas import (
    CanaryUpdate,
    LabelUpdate,
    ModalitySection,
    ModelDescription,
    ModelList,
    ReloadResponse,
    RepositoryChange,
    RepositoryModel,
    TensorSpec,
)
from service.serving.dataplane.explain import EXPLAIN_METHODS
from service.serving.dataplane.modality import blanks_of, modality_support
from service.serving.inference.classifier import Classifier
from service.serving.inference.registry import ModelRegistry, ServedModel

router = APIRouter(prefix="/v1/models", tags=["models"])


def describe_model(model: ServedModel) -> ModelDescription:
    """Describe a served model by the version unpinned requests get."""
    classifier = model.primary().classifier
    h, w = classifier.image_size
    meta = classifier.metadata
    return ModelDescription(
        name=classifier.name,
        version=classifier.version,
        versions=model.versions,
        version_labels=model.labels,
        canary_percent=model.canary_percent,
        memory_bytes={str(v): model.memory.get(v) for v in model.versions},
        labels=list(classifier.labels),
        device=classifier.device,
        inputs=[
            TensorSpec(
                name="image",
                dtype="float32",
                shape=[-1, h, w, 3],
                description="RGB pixels 0..255 after decoding any image file and stretching "
                "it to the model's size (the API does this for uploaded files). Optional: "
                "without it, all-zero pixels (the trained blank) stand in.",
                optional=True,
            ),
            TensorSpec(
                name="text",
                dtype="string",
                shape=[-1],
                description="Raw text; the model normalises and tokenises it. Optional: "
                "omitted or '' is no text (the trained blank). Not both inputs may be missing.",
                optional=True,
            ),
        ],
        outputs=[
            TensorSpec(
                name="probabilities",
                dtype="float32",
                shape=[-1, len(classifier.labels)],
                description="Softmax over the labels, in label order.",
                optional=False,
            )
        ],
        metrics=dict(meta.metrics),
        modalities=modality_section(classifier),
        explain=list(EXPLAIN_METHODS),
        created_at=meta.created_at,
        framework=dict(meta.framework),
    )


def modality_section(classifier: Classifier) -> ModalitySection:
    """What a one-modality request to ``classifier`` is worth, and what stands in."""
    support = modality_support(classifier.metadata)
    blanks = blanks_of(classifier)
    return ModalitySection(
        trained_with_modality_dropout=support.trained_with_dropout,
        modality_dropout=support.modality_dropout,
        accuracy=support.accuracy,
        image_only_accuracy=support.image_only_accuracy,
        text_only_accuracy=support.text_only_accuracy,
        blanks={"image": BLANK_IMAGE, "text": blanks.text},
    )


def repository(registry: ModelRegistry) -> list[RepositoryModel]:
    """Every model of the store (and every served one) with its state."""
    return [
        RepositoryModel(
            name=entry.name,
            versions=entry.versions,
            served=entry.served,
            state="READY" if entry.ready else "UNAVAILABLE",
        )
        for entry in registry.repository()
    ]


@router.get(
    "",
    summary="List the served models",
    response_model=ModelList,
    response_model_exclude_unset=True,
    responses=error_responses(503),
)
async def list_models(
    registry: RegistryDep,
    include_repository: Annotated[
        bool, Query(alias="repository", description="Also list every model of the store.")
    ] = False,
) -> ModelList:
    """Every model this server serves, with its versions, labels and memory."""
    models = [describe_model(model) for _, model in sorted(registry.models.items())]
    if include_repository:
        return ModelList(models=models, repository=repository(registry))
    return ModelList(models=models)


@router.get(
    "/{name}",
    summary="Describe one model",
    response_model=ModelDescription,
    responses=error_responses(404, 503),
)
async def get_model(name: str, registry: RegistryDep) -> ModelDescription:
    """Labels, device, input and output signature, metrics and provenance of a model."""
    return describe_model(registry.get(name))


def _tell_workers(state: AppState) -> None:
    """Make the other worker processes re-read labels and check the store now."""
    if state.workers is not None:
        state.workers.reload_all()


@router.post(
    "/{name}/reload",
    summary="Serve the newest version of a model now",
    response_model=ReloadResponse,
    responses=error_responses(403, 404, 409, 503, 504),
    dependencies=[RequireAdminKey],
)
async def reload_model(name: str, state: StateDep, registry: RegistryDep) -> ReloadResponse:
    """Load the newest version in the model store beside the served one, verify it against
    its golden examples, and swap it in; requests in flight finish on the old version.

    ``reloaded`` is false when the served version is already the newest (or is pinned).
    409 when newer versions exist but none loads and verifies: the served one stays, and a
    rejected version is not tried again. The watcher (``reload_poll_s``) does the same on
    its own. With several worker processes, every worker checks the store too, and the
    answer waits until each serves the newest version it can load (504 past
    ``worker_sync_timeout_s``; they keep trying).
    """
    reloader = registry.get(name).reloader
    assert reloader is not None
    async with state.changes.change(registry):
        outcome = await reloader.reload()
    if state.changes.group is None:
        _tell_workers(state)
    return ReloadResponse(
        model=outcome.model,
        version=outcome.version,
        previous_version=outcome.previous_version,
        reloaded=outcome.reloaded,
        message=outcome.message,
    )


_CHANGE: dict[str, Any] = {
    "response_model": ModelDescription,
    "responses": error_responses(400, 403, 404, 409, 422, 503, 504),
    "dependencies": [RequireAdminKey],
}


@router.put("/{name}/labels/{label}", summary="Point a label at a version, or remove it", **_CHANGE)
async def set_label(
    name: str, label: str, body: LabelUpdate, state: StateDep, registry: RegistryDep
) -> ModelDescription:
    """Point ``label`` at a served version (stored in the model store's labels file);
    ``{"version": null}`` removes the label."""
    try:
        async with state.changes.change(registry):
            if body.version is None:
                model = await registry.remove_label(name, label)
            else:
                model = await registry.set_label(name, label, body.version)
    except ValueError as exc:
        raise _invalid(exc) from exc
    return describe_model(model)


@router.put("/{name}/canary", summary="Send a share of traffic to a canary version", **_CHANGE)
async def set_canary(
    name: str, body: CanaryUpdate, state: StateDep, registry: RegistryDep
) -> ModelDescription:
    """Point ``canary`` at a served version and send it ``percent`` of the unpinned
    requests; the rest go to ``stable`` (set to the version served now when unset)."""
    async with state.changes.change(registry):
        model = await registry.set_canary(name, body.version, body.percent)
    return describe_model(model)


@router.post("/{name}/promote", summary="Make the canary the stable version", **_CHANGE)
async def promote(name: str, state: StateDep, registry: RegistryDep) -> ModelDescription:
    """``stable`` moves to the canary's version and the canary label goes: every unpinned
    request gets the new version. Requests in flight finish where they started."""
    async with state.changes.change(registry):
        model = await registry.promote(name)
    return describe_model(model)


@router.post("/{name}/rollback", summary="Send no more traffic to the canary", **_CHANGE)
async def rollback(name: str, state: StateDep, registry: RegistryDep) -> ModelDescription:
    """The canary label goes: every unpinned request gets ``stable`` again."""
    async with state.changes.change(registry):
        model = await registry.rollback(name)
    return describe_model(model)


_REPOSITORY: dict[str, Any] = {
    "response_model": RepositoryChange,
    "responses": error_responses(400, 403, 404, 409, 503, 504),
    "dependencies": [RequireAdminKey],
}


@router.post("/{name}/load", summary="Load a model from the store", **_REPOSITORY)
async def load_model(name: str, state: StateDep, registry: RegistryDep) -> RepositoryChange:
    """Load the model's versions (per the version policy) through the same load, warm-up
    and golden check as start-up, and serve them. 409 when a version fails. With several
    worker processes, answered once every worker serves the model."""
    try:
        async with state.changes.change(registry, load=name):
            model = await registry.load(name)
    except ValueError as exc:
        raise _invalid(exc) from exc
    return RepositoryChange(model=name, versions=model.versions, state="READY")


@router.post("/{name}/unload", summary="Stop serving a model", **_REPOSITORY)
async def unload_model(name: str, state: StateDep, registry: RegistryDep) -> RepositoryChange:
    """New requests for the model get 404 at once; requests in flight finish (up to
    ``shutdown_timeout_s``), then its versions are closed. With several worker processes,
    answered once every worker has done so."""
    async with state.changes.change(registry, unload=name):
        versions = await registry.unload(name)
    return RepositoryChange(model=name, versions=versions, state="UNAVAILABLE")


def _invalid(exc: ValueError) -> UnprocessableInput:
    return UnprocessableInput(str(exc))
