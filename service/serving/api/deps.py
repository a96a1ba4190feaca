"""Injected objects: the settings, the registry and the runtime a request runs on.

A model request takes its runtime once, here, and holds it until it ends: a hot reload,
a label move, a promotion or an unload changes what later requests get, and closes this
runtime only after every request holding it has finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request

from service.errors import ServiceUnavailable, ShuttingDown
from service.serving.api.state import AppState, app_state
from service.serving.inference.registry import ModelRegistry
from service.serving.inference.runtime import Runtime
from service.serving.metrics import REQUESTS_IN_FLIGHT
from service.serving.request_record import note_model
from service.serving.settings import Settings

RETRY_AFTER_S = 5
"""What a client is told to wait before retrying a service that is not ready."""


async def get_state(request: Request) -> AppState:
    """The application's state."""
    return app_state(request.app)


async def get_registry(request: Request) -> ModelRegistry:
    """The served models; 503 until the service is ready and once it drains."""
    state = app_state(request.app)
    if state.draining:
        raise ShuttingDown("the service is shutting down", retry_after=RETRY_AFTER_S)
    if state.registry is None:
        raise ServiceUnavailable("the models are not loaded yet", retry_after=RETRY_AFTER_S)
    return state.registry


async def get_settings(request: Request) -> Settings:
    """The settings the service started with; 503 before start-up has read them."""
    settings = app_state(request.app).settings
    if settings is None:
        raise ServiceUnavailable("the service is starting", retry_after=RETRY_AFTER_S)
    return settings


StateDep = Annotated[AppState, Depends(get_state)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@contextmanager
def holding(runtime: Runtime) -> Iterator[Runtime]:
    """Hold ``runtime`` for one request (counted in flight, named in the access log and
    the response headers)."""
    note_model(runtime.classifier.name, runtime.classifier.version)
    with runtime.use(), REQUESTS_IN_FLIGHT.track_inprogress():
        yield runtime


async def default_runtime(registry: RegistryDep) -> AsyncIterator[Runtime]:
    """The default model's runtime (``/v1/predict``), canary split included."""
    with holding(registry.default().route()) as runtime:
        yield runtime


async def model_runtime(name: str, registry: RegistryDep) -> AsyncIterator[Runtime]:
    """Model ``name``'s runtime, canary split included; 404 when it is not served."""
    with holding(registry.get(name).route()) as runtime:
        yield runtime


async def version_runtime(name: str, version: int, registry: RegistryDep) -> AsyncIterator[Runtime]:
    """The runtime of one served version of ``name``; 404 for any other."""
    with holding(registry.get(name).route(version=version)) as runtime:
        yield runtime


async def label_runtime(name: str, label: str, registry: RegistryDep) -> AsyncIterator[Runtime]:
    """The runtime of the version ``label`` points to; 404 for a label that is not set or
    points to a version that is not served."""
    with holding(registry.get(name).route(label=label)) as runtime:
        yield runtime


DefaultRuntimeDep = Annotated[Runtime, Depends(default_runtime)]
ModelRuntimeDep = Annotated[Runtime, Depends(model_runtime)]
VersionRuntimeDep = Annotated[Runtime, Depends(version_runtime)]
LabelRuntimeDep = Annotated[Runtime, Depends(label_runtime)]
