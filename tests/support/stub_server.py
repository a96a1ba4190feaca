"""A tiny scripted HTTP server in a background thread, for the client's retry tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PREDICTION = {
    "model": "stub",
    "version": 7,
    "label": "cat",
    "predictions": [
        {"label": "cat", "probability": 0.75},
        {"label": "dog", "probability": 0.2},
        {"label": "bird", "probability": 0.05},
    ],
}


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = field(default_factory=lambda: PREDICTION)
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str, **headers: str) -> Reply:
    """A reply in the service's error shape."""
    return Reply(status, {"error": {"code": code, "message": message}}, headers)


@dataclass
class Hit:
    """What the server saw of one request."""

    method: str
    path: str
    headers: dict[str, str]
    form: list[tuple[str, str | bytes]]


class Script:
    """Replies in order per path (the last one repeats), and every hit recorded."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.hits: list[Hit] = []

    def reset(self) -> None:
        self.replies.clear()
        self.hits.clear()

    def on(self, path: str, *replies: Reply) -> None:
        self.replies[path] = list(replies)

    async def handle(self, request: Request) -> Response:
        form: list[tuple[str, str | bytes]] = []
        if request.method == "POST":
            async with request.form() as parsed:
                for key, value in parsed.multi_items():
                    form.append((key, value if isinstance(value, str) else await value.read()))
        self.hits.append(Hit(request.method, request.url.path, dict(request.headers), form))
        queue = self.replies.get(request.url.path) or [error(404, "not_found", "no such path")]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(script: Script) -> Iterator[str]:
    """Serve ``script`` on a free local port in a thread; yield its URL; always stop it."""
    paths = ["/v1/predict", "/v1/predict/batch", "/v1/models", "/health/live", "/health/ready"]
    app = Starlette(routes=[Route(p, script.handle, methods=["GET", "POST"]) for p in paths])
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # bounded wait for the listener, not a timing assumption
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("stub server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
