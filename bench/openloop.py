"""Open-loop load: requests leave on a fixed schedule, whatever the server does.

A closed loop (wrk, :mod:`bench.load`) sends the next request only when one is answered,
so a server that stalls also slows the generator and its queueing never shows in the
latencies (coordinated omission). Here request ``i`` is due at ``start + i / rate``; its
latency runs from that scheduled moment to the end of its response, so time spent
waiting anywhere (the generator, a connection, the server's queue) counts.

Raw HTTP/1.1 over a pool of persistent connections (opened on demand up to a cap), with
the same pre-built bodies as the closed loop: a compiled C program on epoll
(``openloop_client.c``, built once with the system's C compiler) when there is a compiler,
so that the generator takes little of the cores it shares with the server; otherwise, or
when asked, asyncio coroutines (uvloop when installed). The result says which generator
ran, which rate was achieved and whether the generator kept to its schedule.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench import compiled, eventloop
from bench.bodies import Payload

# The generator kept up when its sends were this late at the 99th percentile at most (a
# tenth of the 100 ms p99 a service should hold at 80% of its peak) ...
MAX_SEND_LAG_P99_MS = 10.0
# ... and it sent at least this share of the scheduled rate, never waiting for a connection.
MIN_ACHIEVED_SHARE = 0.97
# Enough for a server answering in ~0.5 s at ~1,000 req/s; waits are counted beyond it.
DEFAULT_MAX_CONNECTIONS = 512
_PREOPEN = 8


@dataclass(frozen=True)
class OpenLoopResult:
    """One open-loop phase. Latencies are of 2xx answers, from the scheduled send time."""

    target_rps: float
    duration_s: float
    scheduled: int
    sent: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    achieved_rps: float
    throughput_rps: float
    send_lag_p50_ms: float | None
    send_lag_p99_ms: float | None
    send_lag_max_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    connections: int
    waited_for_connection: int
    kept_up: bool
    generator: str = "python"  # "c": openloop_client.c; results from before it: Python


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = False

    def closed(self) -> bool:
        return self.writer.is_closing() or self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@dataclass
class _State:
    host: str
    port: int
    max_connections: int
    idle: list[_Connection] = field(default_factory=list)
    waiters: collections.deque[asyncio.Future[_Connection]] = field(
        default_factory=collections.deque
    )
    opened: int = 0
    waited: int = 0
    all: list[_Connection] = field(default_factory=list)

    async def open(self) -> _Connection:
        self.opened += 1
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.opened -= 1
            raise
        conn = _Connection(reader, writer)
        self.all.append(conn)
        return conn

    async def acquire(self) -> _Connection:
        while self.idle:
            conn = self.idle.pop()  # most recently used first: the server kept it alive
            if not conn.closed():
                return conn
            self.opened -= 1
            conn.close()
        if self.opened < self.max_connections:
            return await self.open()
        self.waited += 1
        future: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        return await future

    def release(self, conn: _Connection, reusable: bool) -> None:
        if not reusable:
            conn.close()
            self.opened -= 1
            if self.waiters:
                waiter = self.waiters.popleft()
                task = asyncio.ensure_future(self.open())
                task.add_done_callback(lambda t: _hand_over(waiter, t))
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)


def _hand_over(waiter: asyncio.Future[_Connection], opened: asyncio.Future[_Connection]) -> None:
    if waiter.done():
        return
    if opened.exception() is not None:
        waiter.set_exception(opened.exception())  # type: ignore[arg-type]
    else:
        waiter.set_result(opened.result())


def request_bytes(host: str, port: int, path: str, payload: Payload) -> bytes:
    """A complete HTTP/1.1 POST of ``payload`` (keep-alive), ready to write."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {payload.content_type}\r\nContent-Length: {len(payload.body)}\r\n\r\n"
    )
    return head.encode("latin-1") + payload.body


def _prepare(
    url: str, payloads: Sequence[Payload], rate: float, duration_s: float
) -> tuple[str, int, list[bytes]]:
    """The host, the port and the requests to cycle through, the arguments checked."""
    if rate <= 0 or duration_s <= 0 or not payloads:
        raise ValueError("rate and duration must be positive, with at least one payload")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return host, port, [request_bytes(host, port, parts.path or "/", p) for p in payloads]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    chunked = False
    keep_alive = lines[0].startswith("HTTP/1.1")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection":
            keep_alive = value != "close"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()  # body until close
        keep_alive = False
    return status, keep_alive


async def run(
    url: str,
    payloads: Sequence[Payload],
    rate: float,
    duration_s: float,
    *,
    timeout_s: float = 30.0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> OpenLoopResult:
    """Send ``rate`` requests per second for ``duration_s`` on a fixed schedule; wait at
    most ``timeout_s`` after the last send for the answers still outstanding."""
    host, port, prepared = _prepare(url, payloads, rate, duration_s)
    state = _State(host, port, max_connections)
    preopened = [await state.open() for _ in range(min(_PREOPEN, max_connections))]
    state.idle.extend(preopened)

    scheduled = max(1, round(rate * duration_s))
    interval = 1.0 / rate
    lags: list[float] = []
    send_times: list[float] = []
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    last_done = 0.0

    async def one(i: int, due: float) -> None:
        nonlocal last_done
        data = prepared[i % len(prepared)]
        for attempt in (0, 1):
            conn = await state.acquire()
            fresh = not conn.used
            sent_at = time.perf_counter()
            try:
                conn.writer.write(data)
                await conn.writer.drain()
                status, keep_alive = await read_response(conn.reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                state.release(conn, reusable=False)
                # A kept-alive connection the server closed while idle: retry once, fresh.
                if attempt == 0 and not fresh:
                    continue
                errors[type(exc).__name__] += 1
                return
            conn.used = True
            done = time.perf_counter()
            if attempt == 0:
                lags.append(sent_at - due)
                send_times.append(sent_at)
            state.release(conn, reusable=keep_alive)
            last_done = done
            if 200 <= status < 300:
                latencies.append(done - due)
            else:
                errors[f"HTTP {status}"] += 1
            return

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.01
    for i in range(scheduled):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            errors["timeout"] += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
    for conn in state.all:
        with contextlib.suppress(Exception):
            conn.close()

    return _summarize(
        rate,
        duration_s,
        scheduled,
        lags=lags,
        sent_at=[t - start for t in send_times],
        latencies=latencies,
        errors=errors,
        last_done=last_done - start if last_done > start else None,
        connections=len(state.all),
        waited=state.waited,
        generator="python",
    )


def _summarize(
    rate: float,
    duration_s: float,
    scheduled: int,
    *,
    lags: Sequence[float],
    sent_at: Sequence[float],
    latencies: Sequence[float],
    errors: collections.Counter[str],
    last_done: float | None,
    connections: int,
    waited: int,
    generator: str,
) -> OpenLoopResult:
    """One phase's figures. Times in seconds: ``lags`` (each send's lateness),
    ``sent_at`` (each send, from the start of the schedule), ``latencies`` (2xx answers,
    from their due time), ``last_done`` (the last answer, from the start)."""
    interval = 1.0 / rate
    sent = len(sent_at)
    # The rate the requests actually went out at: sends over the span of the schedule
    # (or of the actual sends, when they ran late), so falling behind lowers it.
    window = max(scheduled * interval, max(sent_at, default=0.0) + interval)
    achieved = sent / window
    lag_ms = [x * 1000.0 for x in lags]
    lat_ms = [x * 1000.0 for x in latencies]
    lag_p99 = _pct(lag_ms, 99)
    kept_up = (
        achieved >= MIN_ACHIEVED_SHARE * rate
        and waited == 0
        and lag_p99 is not None
        and lag_p99 <= MAX_SEND_LAG_P99_MS
    )
    span = last_done if last_done is not None and last_done > 0 else duration_s
    return OpenLoopResult(
        target_rps=rate,
        duration_s=duration_s,
        scheduled=scheduled,
        sent=sent,
        ok=len(latencies),
        errors=sum(errors.values()),
        error_kinds=dict(errors),
        achieved_rps=achieved,
        throughput_rps=len(latencies) / span,
        send_lag_p50_ms=_pct(lag_ms, 50),
        send_lag_p99_ms=lag_p99,
        send_lag_max_ms=max(lag_ms) if lag_ms else None,
        p50_ms=_pct(lat_ms, 50),
        p90_ms=_pct(lat_ms, 90),
        p99_ms=_pct(lat_ms, 99),
        max_ms=max(lat_ms) if lat_ms else None,
        connections=connections,
        waited_for_connection=waited,
        kept_up=kept_up,
        generator=generator,
    )


def compiled_client() -> Path | None:
    """The C open-loop client (``openloop_client.c``), compiled once; None when no C
    compiler is installed or it fails (and says why)."""
    return compiled.binary("openloop_client.c", libraries=["m"])


def compiled_run(
    binary: Path,
    url: str,
    payloads: Sequence[Payload],
    rate: float,
    duration_s: float,
    *,
    timeout_s: float = 30.0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> OpenLoopResult:
    """:func:`run` with the compiled client: one C thread on epoll instead of Python
    coroutines, so that less of the cores the server shares goes to the generator."""
    host, port, prepared = _prepare(url, payloads, rate, duration_s)
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"the compiled client speaks to 127.0.0.1 only, not {host}")
    stdin = compiled.framed(prepared)
    command = [str(binary), str(port), repr(rate), repr(duration_s), str(max_connections)]
    command.append(repr(timeout_s))
    done = subprocess.run(command, input=stdin, capture_output=True, check=True)
    lines = done.stdout.decode().splitlines()
    connections, waited = (int(x) for x in lines[-1].removeprefix("# ").split())
    interval = 1.0 / rate
    lags: list[float] = []
    sent_at: list[float] = []
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    last_done: float | None = None
    for i, line in enumerate(lines[:-1]):
        fields = line.split()
        status, sent, lag_ms, latency_ms = int(fields[0]), *map(float, fields[1:])
        if sent >= 0:
            sent_at.append(sent)
            lags.append(lag_ms / 1000.0)
        if status > 0:
            finished = i * interval + latency_ms / 1000.0
            last_done = finished if last_done is None else max(last_done, finished)
        if 200 <= status < 300:
            latencies.append(latency_ms / 1000.0)
        elif status == 0:
            errors["connection"] += 1
        elif status < 0:
            errors["timeout"] += 1
        else:
            errors[f"HTTP {status}"] += 1
    return _summarize(
        rate,
        duration_s,
        len(lines) - 1,
        lags=lags,
        sent_at=sent_at,
        latencies=latencies,
        errors=errors,
        last_done=last_done,
        connections=connections,
        waited=waited,
        generator="c",
    )


def measure(
    url: str,
    payloads: Sequence[Payload],
    rate: float,
    duration_s: float,
    *,
    python: bool = False,
    **options: Any,
) -> OpenLoopResult:
    """One phase (the arguments of :func:`run`) with the compiled client when there is one
    and ``python`` is false; otherwise :func:`run` on a fresh event loop, uvloop's when
    installed. The result's ``generator`` says which ran."""
    binary = None if python else compiled_client()
    if binary is not None:
        return compiled_run(binary, url, payloads, rate, duration_s, **options)
    return eventloop.run(run(url, payloads, rate, duration_s, **options))


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None
