"""The draining flag: set the moment the process is asked to stop.

While it is set, readiness answers 503 (load balancers stop sending traffic) and new
requests that need the model are refused with 503 and ``Retry-After``, while requests
already in flight finish. The server's signal hook sets it at once (``mmserve serve``);
the lifespan sets it too, for servers without that hook.
"""

from __future__ import annotations

from starlette.applications import Starlette

from service.serving.api.state import app_state
from service.serving.worker_state import STOPPING


def start_draining(app: Starlette) -> None:
    """Refuse new work from now on; requests already in flight are not affected. In a
    group of workers, the others' readiness turns 503 too."""
    state = app_state(app)
    state.draining = True
    if state.workers is not None:
        state.workers.mark(STOPPING)


def is_draining(app: Starlette) -> bool:
    """Whether the service is shutting down."""
    return app_state(app).draining
