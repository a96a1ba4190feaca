"""The application's state, typed: what the lifespan builds and every layer reads.

One object on ``app.state`` instead of loose attributes: the settings (known once the
lifespan read them), the registry of served models (once start-up loaded them), the
worker group this process belongs to (and how changes reach it), and the draining
flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette

from service.serving.inference.registry import ModelRegistry
from service.serving.settings import Settings
from service.serving.worker_state import WorkerGroup
from service.serving.worker_sync import GroupChanges

if TYPE_CHECKING:
    from service.serving.api.middleware.admission import Admission
    from service.serving.api.middleware.observability import RequestLog

_KEY = "mmserve"


@dataclass
class AppState:
    """Everything the routes and middleware need from the running service."""

    settings: Settings | None = None
    """The settings the service started with; None until the lifespan has read them."""
    registry: ModelRegistry | None = None
    """The served models; None until start-up has loaded them, and after shutdown."""
    workers: WorkerGroup | None = None
    """The group of worker processes this one belongs to, if any."""
    changes: GroupChanges = field(default_factory=lambda: GroupChanges(None, 0.0))
    """How a change to what is served reaches every worker (nothing to do for one)."""
    draining: bool = False
    """Set the moment the process is asked to stop: new model requests get 503."""
    admission: Admission | None = None
    """Which model requests are refused now (the middleware's and the connections')."""
    request_log: RequestLog | None = None
    """Counts, times and logs every answered request (the middleware's and the
    connections')."""


def install_state(app: Starlette, state: AppState) -> AppState:
    """Attach ``state`` to ``app``."""
    setattr(app.state, _KEY, state)
    return state


def app_state(app: Starlette) -> AppState:
    """The state :func:`install_state` attached to ``app``."""
    state = getattr(app.state, _KEY)
    assert isinstance(state, AppState)
    return state
