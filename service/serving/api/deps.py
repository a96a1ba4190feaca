"""Injected objects: the settings and the runtime of a ready service, from ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from service.errors import ServiceUnavailable, ShuttingDown
from service.serving.api.draining import is_draining
from service.serving.api.middleware.observability import note_model
from service.serving.inference.reloader import ModelReloader
from service.serving.inference.runtime import Runtime
from service.serving.metrics import REQUESTS_IN_FLIGHT
from service.serving.settings import Settings

RETRY_AFTER_S = 5
"""What a client is told to wait before retrying a service that is not ready."""


def _refuse_when_draining(request: Request) -> None:
    if is_draining(request.app):
        raise ShuttingDown("the service is shutting down", retry_after=RETRY_AFTER_S)


async def get_runtime(request: Request) -> AsyncIterator[Runtime]:
    """The loaded model and its workers; 503 until the service is ready and once it drains.

    The request holds this runtime until it ends: a hot reload swaps in a new one for later
    requests, and closes this one only after every request holding it has finished.
    """
    _refuse_when_draining(request)
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise ServiceUnavailable("the model is not loaded yet", retry_after=RETRY_AFTER_S)
    note_model(runtime.classifier.name, runtime.classifier.version)
    with runtime.use(), REQUESTS_IN_FLIGHT.track_inprogress():
        yield runtime


async def get_reloader(request: Request) -> ModelReloader:
    """What swaps model versions; 503 until the service is ready and once it drains."""
    _refuse_when_draining(request)
    reloader = getattr(request.app.state, "reloader", None)
    if not isinstance(reloader, ModelReloader):
        raise ServiceUnavailable("the model is not loaded yet", retry_after=RETRY_AFTER_S)
    return reloader


async def get_settings(request: Request) -> Settings:
    """The settings the service started with; 503 before start-up has read them."""
    settings = getattr(request.app.state, "settings", None)
    if not isinstance(settings, Settings):
        raise ServiceUnavailable("the service is starting", retry_after=RETRY_AFTER_S)
    return settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ReloaderDep = Annotated[ModelReloader, Depends(get_reloader)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
