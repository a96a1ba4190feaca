"""Liveness and readiness probes (Kubernetes, Docker HEALTHCHECK, load balancers)."""

from __future__ import annotations

from fastapi import APIRouter

from service.errors import ServiceUnavailable
from service.serving.api.deps import RETRY_AFTER_S, RegistryDep, StateDep
from service.serving.api.errors import error_responses
from service.serving.api.state import AppState
from service.serving.api.v1.schemas import LiveResponse, ReadyResponse
from service.serving.inference.registry import ModelRegistry

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The process is up", response_model=LiveResponse)
async def live() -> LiveResponse:
    """Always 200 while the process answers HTTP."""
    return LiveResponse()


def check_ready(state: AppState, registry: ModelRegistry) -> None:
    """503 unless every served model has a verified version and, with several worker
    processes, every worker is ready."""
    workers = state.workers
    if workers is not None and (waiting := workers.not_ready()):
        raise ServiceUnavailable(
            f"workers {waiting} of {workers.size} are not ready", retry_after=RETRY_AFTER_S
        )
    if not registry.models:
        raise ServiceUnavailable("no model is served", retry_after=RETRY_AFTER_S)


@router.get(
    "/ready",
    summary="Every model is loaded and verified",
    response_model=ReadyResponse,
    responses=error_responses(503),
)
async def ready(state: StateDep, registry: RegistryDep) -> ReadyResponse:
    """200 once every configured model passed its golden check and serves; 503 before and
    at shutdown. With several worker processes, 200 only while every one of them is ready."""
    check_ready(state, registry)
    default = registry.default().primary().classifier
    return ReadyResponse(model=default.name, version=default.version)
