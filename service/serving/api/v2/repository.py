"""The model repository extension of Triton and MLServer: list the store's models, load
one, unload one (``/v2/repository/...``).

A load runs the same load, warm-up and golden check as start-up; an unload lets the
model's requests in flight finish before closing it. Like their native twins under
``/v1/models``, load and unload change what the service serves: they need an admin key
when admin keys are configured. With several worker processes they are answered once
every worker has applied them.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.serving.api.auth import RequireAdminKey
from service.serving.api.deps import RegistryDep, StateDep
from service.serving.api.v1.models import repository
from service.serving.api.v2.routes import v2_responses
from service.serving.api.v2.schemas import RepositoryIndexEntry, RepositoryIndexRequest

router = APIRouter(prefix="/v2/repository", tags=["open inference protocol (v2)"])


@router.post(
    "/index",
    summary="List the models of the repository (v2)",
    response_model=list[RepositoryIndexEntry],
    responses=v2_responses(400, 503),
)
async def index(
    registry: RegistryDep, body: RepositoryIndexRequest | None = None
) -> list[RepositoryIndexEntry]:
    """One entry per version of every model in the store (or served): ``READY`` when it is
    served, ``UNAVAILABLE`` otherwise. ``{"ready": true}`` lists only the served ones."""
    entries = []
    for model in repository(registry):
        for version in model.versions:
            ready = version in model.served
            if body is not None and body.ready and not ready:
                continue
            entries.append(
                RepositoryIndexEntry(
                    name=model.name,
                    version=str(version),
                    state="READY" if ready else "UNAVAILABLE",
                    reason="" if ready else "not loaded",
                )
            )
    return entries


@router.post(
    "/models/{name}/load",
    summary="Load a model (v2)",
    response_class=Response,
    responses=v2_responses(400, 403, 404, 409, 503, 504),
    dependencies=[RequireAdminKey],
)
async def load(name: str, state: StateDep, registry: RegistryDep) -> Response:
    """Load the model's versions per the version policy; 200 with no body once it serves
    (in every worker process)."""
    async with state.changes.change(registry, load=name):
        await registry.load(name)
    return Response(status_code=200)


@router.post(
    "/models/{name}/unload",
    summary="Unload a model (v2)",
    response_class=Response,
    responses=v2_responses(400, 403, 404, 409, 503, 504),
    dependencies=[RequireAdminKey],
)
async def unload(name: str, state: StateDep, registry: RegistryDep) -> Response:
    """Stop serving the model once its requests in flight are answered (in every worker
    process)."""
    async with state.changes.change(registry, unload=name):
        await registry.unload(name)
    return Response(status_code=200)
