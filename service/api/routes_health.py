"""Liveness and readiness probes (Kubernetes, Docker HEALTHCHECK, load balancers)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RuntimeDep
from service.api.errors import error_responses
from service.api.schemas import LiveResponse, ReadyResponse

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
async def ready(runtime: RuntimeDep) -> ReadyResponse:
    """200 once the model passed its golden check and serves; 503 before and at shutdown."""
    return ReadyResponse(model=runtime.classifier.name, version=runtime.classifier.version)
