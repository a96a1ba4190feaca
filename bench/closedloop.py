"""Closed-loop phases through either generator: wrk when installed, else Python (httpx).

Both answer with the same :class:`LoadStats`, so the rest of the harness does not care
which one measured. wrk's latencies are its own histogram of every response; the Python
generator's are of the 2xx answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bench import wrk
from bench.bodies import Payload
from bench.bodies import write as write_bodies
from bench.load import client_pool, run_phase


@dataclass(frozen=True)
class BodySet:
    """One wire format's pre-built bodies, in memory and on disk (listed for wrk)."""

    format: str
    payloads: list[Payload]
    list_file: Path

    @property
    def content_type(self) -> str:
        """The Content-Type shared by every body of the set."""
        return self.payloads[0].content_type


def body_set(format_: str, payloads: list[Payload], folder: Path) -> BodySet:
    """Write ``payloads`` to ``folder`` with a list file, one body path a line."""
    if not payloads or len({p.content_type for p in payloads}) != 1:
        raise ValueError("a body set needs payloads of one content type")
    paths = write_bodies(payloads, folder)
    list_file = folder / "bodies.txt"
    list_file.write_text("".join(f"{p}\n" for p in paths))
    return BodySet(format_, payloads, list_file)


@dataclass(frozen=True)
class LoadStats:
    """One measured closed-loop phase."""

    concurrency: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    elapsed_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def rps(self) -> float:
        """2xx answers per second."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


class WrkGenerator:
    """Phases run by wrk, one process per phase."""

    name = "wrk"

    def __init__(self, binary: str, threads: int = 1, timeout_s: float = 60.0) -> None:
        self.binary = binary
        self.threads = threads
        self.timeout_s = timeout_s

    def measure(self, url: str, bodies: BodySet, concurrency: int, duration_s: float) -> LoadStats:
        """Keep ``concurrency`` requests in flight for ``duration_s`` (whole seconds)."""
        r = wrk.run(
            url,
            bodies.list_file,
            bodies.content_type,
            connections=concurrency,
            duration_s=duration_s,
            threads=self.threads,
            timeout_s=self.timeout_s,
            wrk=self.binary,
        )
        return LoadStats(
            concurrency=concurrency,
            ok=r.ok,
            errors=r.errors,
            error_kinds=r.error_kinds(),
            elapsed_s=r.duration_s,
            p50_ms=r.p50_ms if r.requests else None,
            p95_ms=r.p95_ms if r.requests else None,
            p99_ms=r.p99_ms if r.requests else None,
        )


class PythonGenerator:
    """Phases run by :mod:`bench.load` in this process."""

    name = "python"

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s

    def measure(self, url: str, bodies: BodySet, concurrency: int, duration_s: float) -> LoadStats:
        """Keep ``concurrency`` requests in flight for ``duration_s``."""

        async def phase() -> LoadStats:
            async with client_pool(concurrency, self.timeout_s) as clients:
                s = await run_phase(
                    clients, url, bodies.payloads, concurrency, duration_s=duration_s
                )
            return LoadStats(
                concurrency=concurrency,
                ok=s.ok,
                errors=s.errors,
                error_kinds=dict(s.error_kinds),
                elapsed_s=s.elapsed_s,
                p50_ms=s.percentile_ms(50),
                p95_ms=s.percentile_ms(95),
                p99_ms=s.percentile_ms(99),
            )

        return asyncio.run(phase())


Generator = WrkGenerator | PythonGenerator


def choose(force_python: bool, timeout_s: float, threads: int = 1) -> tuple[Generator, str]:
    """wrk when installed (and not refused), else the Python generator; with a sentence
    saying which and why."""
    binary = None if force_python else wrk.executable()
    if binary is not None:
        return WrkGenerator(binary, threads, timeout_s), f"load generator: wrk ({binary})"
    reason = "--python-load given" if force_python else "wrk is not installed"
    return PythonGenerator(timeout_s), (
        f"load generator: FALLING BACK to the Python generator ({reason}); it shares the "
        "CPUs and caps far below wrk, so high-concurrency rows measure it as much as the "
        "server. Install wrk (Debian/Ubuntu: apt-get install wrk) for figures that see the "
        "server."
    )
