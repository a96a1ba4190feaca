"""``GET /metrics``: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.serving.metrics import exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    """Requests by route and status, latencies, batch sizes, queue depth and times, items
    inferred, requests in flight and the model served, in Prometheus text format. With
    several worker processes, every worker's figures added up, whichever worker answers."""
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
