"""``GET /metrics``: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    """Requests by route and status, latencies, batch sizes, queue depth and times, items
    inferred, requests in flight and the model served, in Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
