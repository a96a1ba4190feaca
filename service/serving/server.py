"""Run the app under uvicorn with a graceful, successful shutdown on SIGTERM and SIGINT.

On the signal the app starts draining at once (readiness and new requests answer 503),
uvicorn stops accepting connections and waits up to ``shutdown_timeout_s`` for requests in
flight, the lifespan closes the model, and the process exits with status 0. SIGHUP checks
the store for a newer model version at once (as ``POST /v1/models/{name}/reload`` does).
Connections go through :mod:`service.serving.connections` (a cap and read deadlines). Imported
only when ``mmserve serve`` runs, so the CLI's ``--help`` stays instant.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.serving.api.draining import start_draining
from service.serving.api.state import app_state
from service.serving.api.v1.plain import DirectPredict
from service.serving.app import request_reload
from service.serving.connections import guarded_protocol
from service.serving.settings import Settings

log = logging.getLogger("mmserve.server")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

STARTUP_FAILURE = 3
"""Exit status when the server never started (uvicorn's own)."""


class GracefulServer(uvicorn.Server):
    """uvicorn's server, calling ``on_signal`` the moment a stop signal arrives.

    uvicorn re-raises the signal after its graceful shutdown, so the process would end
    "killed by SIGTERM" (status -15) even after every request was answered; here a drained
    shutdown is a normal exit.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_signal: Callable[[], None],
        on_reload: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self._on_signal = on_signal
        self._on_reload = on_reload

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            # Runs in the main thread between bytecodes, like any Python signal handler.
            self._on_signal()
            log.info("%s: draining; new requests get 503", signal.Signals(sig).name)
        super().handle_exit(sig, frame)

    def _handle_reload(self, sig: int, frame: FrameType | None) -> None:
        self._on_reload()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals can only be handled in the main thread (not under a test's thread).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        original[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle_reload)
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: address, log level, access log and the drain
    bound. Also builds the route templates the request log labels unrouted requests with
    (the app's OpenAPI document, about 0.1 s), so that no request waits for them."""
    state = app_state(app)
    if state.request_log is not None:
        state.request_log.prepare()
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Ours (mmserve.access) or none: uvicorn's would log client addresses, unstructured.
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
        http=guarded_protocol(settings, state, DirectPredict(app)),
        # Connections are capped per worker by max_connections (service.serving.connections).
        backlog=max(2048, settings.max_connections),
    )


def run_server(app: FastAPI, settings: Settings, sockets: list[socket.socket] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a graceful shutdown, 3 if it never started.

    ``sockets``: listen on these (a worker of :mod:`service.serving.workers`) instead of binding.
    """
    server = GracefulServer(
        server_config(app, settings),
        on_signal=lambda: start_draining(app),
        on_reload=lambda: request_reload(app),
    )
    server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILURE
