"""The HTTP layer: routes, request/response schemas and error mapping. No tensors here.

api/
  state.py deps.py auth.py errors.py openapi.py   shared by every protocol
  health.py metrics.py                            operations: probes, Prometheus
  middleware/   pure ASGI: admission, body limits, metrics and access log
  v1/           the native API: routes, multipart and JSON bodies, schemas
  v2/           the Open Inference Protocol: routes, codec, tensors, schemas
"""

from __future__ import annotations

from fastapi import APIRouter

from service.serving.api import health, metrics
from service.serving.api.auth import RequireApiKey
from service.serving.api.errors import error_responses
from service.serving.api.v1 import models as v1_models
from service.serving.api.v1 import predict as v1_predict
from service.serving.api.v2 import repository as v2_repository
from service.serving.api.v2 import routes as v2_routes


def api_router() -> APIRouter:
    """Every route of the REST API. All but the health probes need an API key when keys are
    configured (probes must answer orchestrators that hold no key)."""
    router = APIRouter()
    for module in (v1_predict, v1_models, metrics):
        router.include_router(
            module.router, dependencies=[RequireApiKey], responses=error_responses(401)
        )
    # The Open Inference Protocol (v2): the same keys, its own error body, open probes.
    for v2_module in (v2_routes, v2_repository):
        router.include_router(
            v2_module.router, dependencies=[RequireApiKey], responses=v2_routes.v2_responses(401)
        )
    router.include_router(health.router)
    router.include_router(v2_routes.health_router)
    return router
