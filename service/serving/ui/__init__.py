"""The playground and model card: a page served by the service itself, and the read-only
route that gives it the artifact's card files.

    page.py     GET /, /ui/ and its static files (HTML, CSS, JavaScript; no build step)
    files.py    GET /v1/models/{name}/versions/{version}/files/{file}: card files only
    static/     the page; it calls only the public HTTP API

Nothing here imports TensorFlow; the page works offline (no CDN, no third-party request).
"""

from __future__ import annotations

from fastapi import APIRouter

from service.serving.api.auth import RequireApiKey
from service.serving.api.errors import error_responses
from service.serving.ui import files, page


def ui_router() -> APIRouter:
    """The page (open, like ``/docs``: it holds no data) and the artifact files route
    (protected by API keys like the rest of ``/v1``)."""
    router = APIRouter()
    router.include_router(page.router)
    router.include_router(
        files.router, dependencies=[RequireApiKey], responses=error_responses(401)
    )
    return router
