"""Closed-loop load with ``wrk`` (a C load generator; Debian package ``wrk``).

wrk keeps ``connections`` requests in flight over persistent connections and costs far
less CPU per request than any Python client, so on a small machine the figures are the
server's, not the generator's. ``wrk_bodies.lua`` cycles through the pre-built bodies and
prints one ``WRK_RESULT {json}`` line, parsed here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_bodies.lua")
RESULT_PREFIX = "WRK_RESULT "
# wrk's -d is whole seconds at best; it also needs a few seconds to end a stuck phase.
_GRACE_S = 30.0


class WrkFailed(RuntimeError):
    """wrk exited with an error or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk phase: counts, errors and wrk's latency distribution (all responses)."""

    requests: int
    duration_s: float
    non2xx: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        """Responses with a 2xx status."""
        return max(0, self.requests - self.non2xx)

    @property
    def socket_errors(self) -> int:
        """Connect, read, write errors and timeouts."""
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors."""
        return self.non2xx + self.socket_errors

    def error_kinds(self) -> dict[str, int]:
        """Each kind of error that occurred, with its count."""
        kinds = {
            "non-2xx": self.non2xx,
            "connect": self.connect_errors,
            "read": self.read_errors,
            "write": self.write_errors,
            "timeout": self.timeouts,
        }
        return {k: v for k, v in kinds.items() if v}


def executable() -> str | None:
    """The wrk binary (``$BENCH_WRK`` or the one on ``PATH``), or None when absent."""
    configured = os.environ.get("BENCH_WRK")
    if configured is not None:
        return configured if configured and shutil.which(configured) else None
    return shutil.which("wrk")


def run(
    url: str,
    body_list: Path,
    content_type: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 60.0,
    wrk: str | None = None,
) -> WrkResult:
    """Run one closed-loop phase against ``url`` and parse its result."""
    binary = wrk or executable()
    if binary is None:
        raise WrkFailed("wrk is not installed")
    argv = [
        binary,
        f"--threads={max(1, min(threads, connections))}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        f"--script={SCRIPT}",
        url,
        "--",
        str(body_list),
        content_type,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + timeout_s + _GRACE_S
    )
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return parse(done.stdout)


def parse(stdout: str) -> WrkResult:
    """The ``WRK_RESULT`` line of wrk's output, as a :class:`WrkResult`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            raw = json.loads(line[len(RESULT_PREFIX) :])
            break
    else:
        raise WrkFailed(f"no {RESULT_PREFIX.strip()} line in wrk's output:\n{stdout[-2000:]}")
    lat = raw["latency_us"]
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        non2xx=int(raw["non2xx"]),
        connect_errors=int(raw["connect"]),
        read_errors=int(raw["read"]),
        write_errors=int(raw["write"]),
        timeouts=int(raw["timeout"]),
        p50_ms=lat["p50"] / 1000.0,
        p90_ms=lat["p90"] / 1000.0,
        p95_ms=lat["p95"] / 1000.0,
        p99_ms=lat["p99"] / 1000.0,
        max_ms=lat["max"] / 1000.0,
    )
