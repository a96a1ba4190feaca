"""The HTTP layer: routes, request/response schemas and error mapping. No tensors here."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import (
    routes_health,
    routes_metrics,
    routes_models,
    routes_predict,
    routes_v2,
)
from service.api.auth import RequireApiKey
from service.api.errors import error_responses


def api_router() -> APIRouter:
    """Every route of the REST API. All but the health probes need an API key when keys are
    configured (probes must answer orchestrators that hold no key)."""
    router = APIRouter()
    for module in (routes_predict, routes_models, routes_metrics):
        router.include_router(
            module.router, dependencies=[RequireApiKey], responses=error_responses(401)
        )
    # The Open Inference Protocol (v2): the same keys, its own error body, open probes.
    router.include_router(
        routes_v2.router, dependencies=[RequireApiKey], responses=routes_v2.v2_responses(401)
    )
    router.include_router(routes_health.router)
    router.include_router(routes_v2.health_router)
    return router
