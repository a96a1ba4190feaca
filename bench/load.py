"""The Python load generator (httpx), used when wrk is not installed.

A fixed number of concurrent clients, each sending its next request as soon as the
previous one is answered (closed loop), so the concurrency level is the number of
requests in flight. It costs far more CPU per request than wrk and shares the machine
with the server: on a small machine it measures itself as much as the server (it capped
near 590 req/s on 2 cores against a constant-answer endpoint that does ~5,000 under wrk).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np

from bench.bodies import Payload

# A phase bounded by a request count still ends after this long, whatever happens.
MAX_PHASE_S = 600.0


@dataclass
class PhaseStats:
    """What one phase at one concurrency level measured."""

    concurrency: int
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        """Requests answered with 200."""
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        """Successful requests per second over the phase."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        """Latency percentile ``q`` (0-100) of the successful requests, in ms."""
        return percentile(self.latencies_ms, q)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), or None without values."""
    return float(np.percentile(values, q)) if len(values) else None


@contextlib.asynccontextmanager
async def client_pool(
    count: int, request_timeout_s: float
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One single-connection client per concurrent request, kept for a whole server run.

    A shared client's connection pool costs far more CPU per request at high concurrency
    (measured here: a whole core at 32 in flight), and the client shares the machine's
    cores with the server under test, so each simulated caller gets its own.
    """
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    timeout=httpx.Timeout(request_timeout_s),
                    # A proxy from the environment must never sit between client and server.
                    trust_env=False,
                )
            )
            for _ in range(count)
        ]
        yield clients


async def run_phase(
    clients: Sequence[httpx.AsyncClient],
    url: str,
    payloads: Sequence[Payload],
    concurrency: int,
    *,
    duration_s: float | None = None,
    max_requests: int | None = None,
) -> PhaseStats:
    """Keep ``concurrency`` requests in flight until ``duration_s`` has passed or
    ``max_requests`` have been sent (at least one must be given); requests in flight at
    the end are awaited and counted."""
    if duration_s is None and max_requests is None:
        raise ValueError("give duration_s or max_requests")
    if not payloads:
        raise ValueError("no payloads to send")
    stats = PhaseStats(concurrency)
    start = time.perf_counter()
    deadline = start + (duration_s if duration_s is not None else MAX_PHASE_S)
    sent = itertools.count()
    last_done = start

    if len(clients) < concurrency:
        raise ValueError(f"{len(clients)} clients for {concurrency} concurrent requests")

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal last_done
        while time.perf_counter() < deadline:
            i = next(sent)
            if max_requests is not None and i >= max_requests:
                return
            payload = payloads[i % len(payloads)]
            t0 = time.perf_counter()
            try:
                response = await client.post(
                    url, content=payload.body, headers={"content-type": payload.content_type}
                )
            except httpx.HTTPError as exc:
                stats.errors += 1
                stats.error_kinds[type(exc).__name__] += 1
                last_done = time.perf_counter()
                # A dead server refuses at once: don't spin through the rest of the phase.
                await asyncio.sleep(0.05)
                continue
            done = time.perf_counter()
            last_done = done
            if response.status_code == 200:
                stats.latencies_ms.append((done - t0) * 1000.0)
            else:
                stats.errors += 1
                stats.error_kinds[f"HTTP {response.status_code}"] += 1

    await asyncio.gather(*(client_loop(c) for c in clients[:concurrency]))
    stats.elapsed_s = last_done - start
    return stats
