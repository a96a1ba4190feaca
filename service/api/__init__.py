"""The HTTP layer: routes, request/response schemas and error mapping. No tensors here."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import routes_health, routes_metrics, routes_models, routes_predict


def api_router() -> APIRouter:
    """Every route of the REST API."""
    router = APIRouter()
    for module in (routes_predict, routes_models, routes_health, routes_metrics):
        router.include_router(module.router)
    return router
