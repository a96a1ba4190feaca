"""No request waits for a thread: every route and every dependency it runs is a coroutine.

FastAPI runs a plain ``def`` endpoint or dependency in its thread pool: a hop to a thread
and back on every request. A sync ``get_registry`` in the prediction chain once cost about
a fifth of the service's throughput at concurrency 32 without failing any test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from service.serving.app import create_app
from service.serving.settings import Settings

# Blocking on purpose: the exposition reads every worker's metric files from disk, which
# belongs off the event loop (and a scrape every few seconds is not the hot path).
OFF_THE_LOOP = {"/metrics: metrics"}


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    # Security schemes and other callable instances: their __call__ decides.
    method = getattr(call, "__call__", None)  # noqa: B004
    return not inspect.isfunction(call) and inspect.iscoroutinefunction(method)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included router
        if included is not None:
            yield from _api_routes(included.routes)


def test_every_route_and_dependency_is_async(settings: Settings) -> None:
    routes = list(_api_routes(create_app(settings).routes))
    assert len(routes) > 20
    blocking = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', repr(call))}"
            for route in routes
            for call in [route.endpoint, *_calls(route.dependant)]
            if not _runs_on_the_loop(call)
        }
    )
    assert set(blocking) == OFF_THE_LOOP, "these run in the thread pool on every request"
