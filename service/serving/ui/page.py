"""``GET /`` (a redirect), ``GET /ui/`` (the page) and ``GET /ui/{asset}`` (its files).

The page is static: the browser fetches the model list, the card files and the answers
from the public API, so nothing here reads a model. A strict Content-Security-Policy
allows scripts, styles and fetches from this origin only, and no inline script or style.
``ui=false`` (``MMSERVE_UI``) makes every path here answer 404.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response

from service.errors import NotFound
from service.serving.api.deps import SettingsDep

PAGE_PATH = "/ui/"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # blob: previews of the picked image and the card's pictures (fetched with the key)
        "img-src 'self' blob:",
        "connect-src 'self'",
        "manifest-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
"""What the page may load: its own origin's files and API, nothing inline, no frames."""

_ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The page's files (``static/``): nothing else is served from it."""

_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # A new deployment may ship a new page: revalidate, never serve a stale one.
    "Cache-Control": "no-cache",
}


async def _require_ui(settings: SettingsDep) -> None:
    if not settings.ui:
        raise NotFound("the page is turned off (MMSERVE_UI=false)")


router = APIRouter(include_in_schema=False, dependencies=[Depends(_require_ui)])


@cache
def _static(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


@router.get("/")
async def root() -> RedirectResponse:
    """The page lives at /ui/, so its relative links work."""
    return RedirectResponse(PAGE_PATH, status_code=307)


@router.get(PAGE_PATH)
async def page() -> Response:
    """The playground and model card."""
    return Response(_static("index.html"), media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/ui/{asset}")
async def asset(asset: str) -> Response:
    """One of the page's files; any other name is 404."""
    media_type = _ASSETS.get(asset)
    if media_type is None:
        raise NotFound(f"no such file: {asset!r}")
    return Response(
        _static(asset),
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
