"""Injected objects: the settings and the runtime of a ready service, from ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.errors import ServiceUnavailable
from service.inference.runtime import Runtime
from service.settings import Settings

RETRY_AFTER_S = 5
"""What a client is told to wait before retrying a service that is not ready."""


async def get_runtime(request: Request) -> Runtime:
    """The loaded model and its workers; 503 until the service is ready."""
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise ServiceUnavailable("the model is not loaded yet", retry_after=RETRY_AFTER_S)
    return runtime


async def get_settings(request: Request) -> Settings:
    """The settings the service started with; 503 before start-up has read them."""
    settings = getattr(request.app.state, "settings", None)
    if not isinstance(settings, Settings):
        raise ServiceUnavailable("the service is starting", retry_after=RETRY_AFTER_S)
    return settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
