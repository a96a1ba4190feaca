"""Liveness and readiness probes (Kubernetes, Docker HEALTHCHECK, load balancers)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.errors import ServiceUnavailable
from service.serving.api.deps import RETRY_AFTER_S, RuntimeDep
from service.serving.api.errors import error_responses
from service.serving.api.v1.schemas import LiveResponse, ReadyResponse
from service.serving.worker_state import WorkerGroup

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The process is up", response_model=LiveResponse)
async def live() -> LiveResponse:
    """Always 200 while the process answers HTTP."""
    return LiveResponse()


@router.get(
    "/ready",
    summary="The model is loaded and verified",
    response_model=ReadyResponse,
    responses=error_responses(503),
)
async def ready(request: Request, runtime: RuntimeDep) -> ReadyResponse:
    """200 once the model passed its golden check and serves; 503 before and at shutdown.
    With several worker processes, 200 only while every one of them is ready."""
    workers = request.app.state.workers
    if isinstance(workers, WorkerGroup) and (waiting := workers.not_ready()):
        raise ServiceUnavailable(
            f"workers {waiting} of {workers.size} are not ready", retry_after=RETRY_AFTER_S
        )
    return ReadyResponse(model=runtime.classifier.name, version=runtime.classifier.version)
