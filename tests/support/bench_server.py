"""A tiny HTTP/1.1 keep-alive server in a background thread, for the load generators.

``POST /ok`` answers 200 at once; ``POST /slow`` answers 200 after ``slow_s``, one request
at a time (a server with a fixed capacity); ``POST /refuse`` answers 503 with
``Connection: close`` and closes; ``POST /chunked`` answers 200 in chunks; anything else
is 404. Bodies are read in
full (Content-Length) and discarded. Counts every request it answered.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_ANSWER = b'{"ok": true}'


@dataclass
class LocalServer:
    """Where the server listens and what it has answered."""

    port: int = 0
    slow_s: float = 0.05
    answered: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{path}"


async def _serve(server: LocalServer, ready: threading.Event, stop: asyncio.Event) -> None:
    lock = asyncio.Lock()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = b"200 OK" if path in ("/ok", "/slow", "/chunked") else b"404 Not Found"
                if path == "/slow":
                    async with lock:
                        await asyncio.sleep(server.slow_s)
                server.answered[path] = server.answered.get(path, 0) + 1
                if path == "/refuse":
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                        b"Connection: close\r\nContent-Length: 2\r\n\r\n{}"
                    )
                    await writer.drain()
                    return
                if path == "/chunked":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b'5\r\n{"ok"\r\n7;x=y\r\n: true}\r\n0\r\n\r\n'
                    )
                else:
                    writer.write(
                        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(_ANSWER)).encode() + b"\r\n\r\n" + _ANSWER
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    ready.set()
    async with listener:
        await stop.wait()


@contextmanager
def local_server(slow_s: float = 0.05) -> Iterator[LocalServer]:
    """Run a :class:`LocalServer` for the ``with`` block."""
    server = LocalServer(slow_s=slow_s)
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        loop.run_until_complete(_serve(server, ready, stop))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the local server did not start")
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
