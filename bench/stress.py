"""Overload and slow-client scenarios against a running service
(``python -m bench.stress overload|many|trickle --port PORT --pid PID``).

Three scenarios, each bounded in time, loopback only:

1. overload: ``--connections`` closed-loop connections against a service started with a
   small queue, for ``--seconds``; every answer must be 200 or 503 with Retry-After, and
   the 503s' latency is reported separately from the 200s'. By default a refused client
   asks again at once; with ``--honour-retry-after`` it waits as long as the 503 says,
   lengthened at random as the project's client does (0-20%), or exactly as long with
   ``--no-jitter`` too (clients refused together then come back together);
2. many connections: ``--many`` (1,000) concurrent connections against the default
   settings: the accepted requests' p99 and how fast the rest were refused;
3. trickle: ``--trickle`` (500) connections that send their headers one byte a second,
   while one client sends normal requests in turn; how long those took, and how many of
   the trickling connections the header deadline closed.

The clients send pre-built requests (the bench's own JPEGs) over raw sockets, so each
answer's status and latency are known. For overload and many they are one compiled C
program on epoll (``closedloop_client.c``, built once with the system's C compiler) when
there is a compiler, so that the client takes little of the cores it shares with the
server; otherwise, and with ``--client python``, asyncio coroutines. Server CPU is read
from /proc for the server's process tree. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench import compiled, eventloop, metrics
from bench.inputs import generate
from service.client.core import JITTER, RetryPolicy

BOUNDARY = "stressboundary"


def _bodies(count: int = 64, side: int = 256) -> list[bytes]:
    requests = []
    for sample in generate(count, side):
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
                f'filename="{sample.filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + sample.image
            + (
                f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
                f"{sample.text}\r\n--{BOUNDARY}--\r\n"
            ).encode()
        )
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: bench\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
    return requests


@dataclass
class Tally:
    """Latencies (ms) by status, each with the second of the run it was sent in; 0 stands
    for a connection error."""

    latencies: dict[int, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    missing_retry_after: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, status: int, sent: float) -> None:
        """An answer of ``status`` to a request sent at ``sent`` (perf_counter), now."""
        now = time.perf_counter()
        self.latencies[status].append((sent - self.started, (now - sent) * 1000))

    def add_lines(self, lines: str) -> None:
        """Answers as the compiled client prints them: ``status sent_s latency_ms
        retry_after`` (retry_after -1 when the answer had none)."""
        for line in lines.splitlines():
            status, sent, latency, retry_after = line.split()
            self.latencies[int(status)].append((float(sent), float(latency)))
            if status == "503" and float(retry_after) < 0:
                self.missing_retry_after += 1

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for status, values in sorted(self.latencies.items()):
            out[str(status)] = _stats([ms for _, ms in values])
            # Without the first second, when every client starts at once: the steady state.
            later = [ms for at, ms in values if at >= 1.0]
            if later:
                out[f"{status}_after_1s"] = _stats(later)
        out["503_without_retry_after"] = self.missing_retry_after
        return out


def _stats(values: list[float]) -> dict[str, object]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool, float | None]:
    """Send one request; (status, keep the connection, its Retry-After in seconds)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    retry_after = headers.get("retry-after")
    return status, headers.get("connection") != "close", _seconds(retry_after)


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return 0.0  # present, but not a number of seconds


async def _closed_loop(
    port: int, requests: list[bytes], until: float, tally: Tally, i: int, wait: RetryPolicy | None
) -> None:
    reader = writer = None
    n = i
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            status, keep, retry_after = await _exchange(reader, writer, requests[n % len(requests)])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status, keep, retry_after = 0, False, 0.0
        tally.add(status, started)
        if status == 503 and retry_after is None:
            tally.missing_retry_after += 1
        if not keep and writer is not None:
            writer.close()
            writer = None
        n += 1
        if wait is not None and status == 503 and retry_after:
            # At least that long: an event loop's timers may fire a little early (libuv's
            # clock is read once per pass), so sleep again for what is left.
            deadline = min(time.monotonic() + wait.spread(retry_after), until)
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(left)
    if writer is not None:
        writer.close()


def _tree_cpu(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass(frozen=True)
class Load:
    """One closed-loop run: who is driven, how hard, and how refused clients behave."""

    port: int
    connections: int
    seconds: float
    pid: int | None = None  # the server's, to measure its CPU
    honour: bool = False  # refused clients wait as Retry-After says
    jitter: float = JITTER  # ... lengthened by a random share up to this

    async def measured(self, client: str, run: Awaitable[Tally]) -> dict[str, object]:
        """The JSON of a run of ``client``: ``run`` drives the load and returns its tally.
        With the server's ``pid``, also its CPU time and, from its ``/metrics``, its
        refusals by stage (``admission``: before the body; ``handler``: after it)."""
        cpu0 = _tree_cpu(self.pid) if self.pid else 0.0
        refused0 = await server_refusals(self.port) if self.pid else None
        tally = await run
        result: dict[str, object] = {
            "client": client,
            "connections": self.connections,
            "seconds": self.seconds,
            "honour_retry_after": self.honour,
            "retry_jitter": self.jitter if self.honour else None,
            **tally.summary(),
        }
        if self.pid:
            result["server_cpu_s"] = round(_tree_cpu(self.pid) - cpu0, 2)
            refused = await server_refusals(self.port)
            if refused is not None and refused0 is not None:
                result["server_refusals"] = {
                    stage: count - refused0.get(stage, 0) for stage, count in refused.items()
                }
        return result


async def server_refusals(port: int) -> dict[str, float] | None:
    """The service's refusals by stage (:func:`bench.metrics.read_refusals`); None when they
    cannot be read."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            return await metrics.read_refusals(client, f"http://127.0.0.1:{port}/metrics")
    except httpx.HTTPError:
        return None


async def closed_loop(load: Load) -> dict[str, object]:
    """The Python coroutines' closed loop."""
    requests = _bodies()
    # The refused clients' waits: those of the project's client (no retries are counted
    # here, only how long to wait), or none when refused clients ask again at once.
    policy = RetryPolicy(retries=0, backoff=0.0, max_wait=math.inf, jitter=load.jitter)
    wait = policy if load.honour else None

    async def run() -> Tally:
        tally = Tally()
        until = time.monotonic() + load.seconds
        await asyncio.gather(
            *(
                _closed_loop(load.port, requests, until, tally, i, wait)
                for i in range(load.connections)
            )
        )
        return tally

    return await load.measured("python", run())


def compiled_client() -> Path | None:
    """The C closed-loop client (``closedloop_client.c``), compiled once; None when no C
    compiler is installed or it fails (and says why)."""
    return compiled.binary("closedloop_client.c")


async def compiled_closed_loop(binary: Path, load: Load) -> dict[str, object]:
    """:func:`closed_loop` with the compiled client: one C thread on epoll instead of
    Python coroutines, so that less of the cores the server shares goes to the client."""
    stdin = compiled.framed(_bodies())
    command = [str(binary), str(load.port), str(load.connections), str(load.seconds)]
    command += [str(int(load.honour)), str(load.jitter if load.honour else 0.0)]
    command.append(str(random.getrandbits(31)))

    async def run() -> Tally:
        done = await asyncio.to_thread(
            subprocess.run, command, input=stdin, capture_output=True, check=True
        )
        tally = Tally()
        tally.add_lines(done.stdout.decode())
        return tally

    return await load.measured("c", run())


async def trickle(port: int, connections: int, seconds: float) -> dict[str, object]:
    """``connections`` sockets sending headers a byte a second; normal requests meanwhile."""
    line = b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: multipart/form-data\r\n"
    closed_at: list[float] = []
    started = time.monotonic()

    async def slow() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        for byte in line:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            try:
                await asyncio.wait_for(reader.read(1), timeout=1.0)
                closed_at.append(time.monotonic() - started)  # the server answered/closed
                break
            except TimeoutError:
                continue
            except OSError:
                closed_at.append(time.monotonic() - started)
                break
        writer.close()

    trickling = [asyncio.create_task(slow()) for _ in range(connections)]
    await asyncio.sleep(1.0)  # all of them open and trickling
    requests = _bodies(8)
    normal: list[float] = []
    until = time.monotonic() + seconds
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while time.monotonic() < until:
        t = time.perf_counter()
        status, _, _ = await _exchange(reader, writer, requests[n % len(requests)])
        normal.append((time.perf_counter() - t) * 1000)
        assert status == 200, status
        n += 1
        await asyncio.sleep(0.05)
    writer.close()
    await asyncio.gather(*trickling)
    return {
        "trickling_connections": connections,
        "normal_requests": len(normal),
        "normal_p50_ms": round(statistics.median(normal), 2),
        "normal_max_ms": round(max(normal), 2),
        "trickling_closed_by_server": len(closed_at),
        "closed_after_s_median": round(statistics.median(closed_at), 2) if closed_at else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["overload", "many", "trickle"])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--pid", type=int, help="the server's pid, to measure its CPU")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--honour-retry-after",
        action="store_true",
        help="a refused client waits as long as its 503's Retry-After says, lengthened by a "
        "random 0-20%% as the project's client does (default: it asks again at once)",
    )
    parser.add_argument(
        "--client",
        choices=["auto", "c", "python"],
        default="auto",
        help="overload and many: the compiled C client (auto: when a C compiler is "
        "installed) or Python coroutines",
    )
    parser.add_argument(
        "--no-jitter",
        action="store_true",
        help="with --honour-retry-after: wait exactly as long as Retry-After says",
    )
    args = parser.parse_args()
    jitter = 0.0 if args.no_jitter else JITTER
    binary = compiled_client() if args.client in ("auto", "c") else None
    if args.client == "c" and binary is None:
        parser.error("--client c needs a C compiler (cc or gcc)")
    if args.scenario == "trickle":
        result = eventloop.run(trickle(args.port, args.connections, args.seconds))
    else:
        load = Load(
            args.port, args.connections, args.seconds, args.pid, args.honour_retry_after, jitter
        )
        if binary is not None:
            result = eventloop.run(compiled_closed_loop(binary, load))
        else:
            if args.client == "auto":
                print("no C compiler: the overload clients are Python coroutines", file=sys.stderr)
            result = eventloop.run(closed_loop(load))
    result = {"scenario": args.scenario, **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
