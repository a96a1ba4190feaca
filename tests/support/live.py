"""A real uvicorn server (``mmserve serve``'s configuration) in a thread, and raw sockets.

For behaviour that only exists on the wire: connection caps, read deadlines, answers sent
before a body is read. The app is usually given a fake classifier: no TensorFlow.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from service.serving.server import GracefulServer, server_config
from service.serving.settings import Settings

WAIT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: FastAPI, settings: Settings) -> Iterator[int]:
    """Serve ``app`` with ``settings`` (its port included) until the block ends; yields the
    port once the server accepts connections."""
    server = GracefulServer(server_config(app, settings), on_signal=lambda: None)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive(), "the server stopped during start-up"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield settings.port
    finally:
        server.should_exit = True
        thread.join(WAIT_S)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A client connection to the local server."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP/1.1 response."""
    return int(response.split(b" ", 2)[1])


def multipart_head(path: str, content_length: int, boundary: str = "b0undary") -> bytes:
    """The request line and headers of a multipart POST declaring ``content_length``."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()
