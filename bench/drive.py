"""Drive one started server: closed-loop levels, open-loop rates, a profile at load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import openloop, profiling, report
from bench.closedloop import BodySet, Generator
from bench.config import Config
from bench.machine import CpuTimes, cpu_times
from bench.metrics import HistogramTotals, mean_between, read_batch_sizes
from bench.results import LevelResult, MemoryResult, OpenLoopRow, ProfileRow
from bench.servers import ServerFailed, ServerProcess, free_port, log_tail, running
from bench.targets import Target

# py-spy needs a moment to attach; the load runs this much longer than the sampling.
_PROFILE_MARGIN_S = 1.0
# Longest wait for a server to finish what a previous phase left queued (the naive
# server at concurrency 64 needs ~7 s).
_SETTLE_MAX_S = 30.0


STEAL_NOTE_PCT = 5.0
"""Steal (the host's share of the machine's CPU time during a level) worth a note."""


@dataclass
class _Meter:
    """What a server did over one measured phase: its mean batch size (from its metrics,
    when it has them), its CPU time and the host's steal."""

    server: ServerProcess
    metrics_url: str | None
    before: HistogramTotals | None
    cpu0: float
    machine0: CpuTimes | None
    mean_batch_size: float | None = None
    cpu_s: float = 0.0
    steal_pct: float | None = None

    @classmethod
    def start(cls, server: ServerProcess, metrics_url: str | None) -> _Meter:
        before = _batch_sizes(metrics_url)
        return cls(server, metrics_url, before, server.cpu_seconds(), cpu_times())

    def stop(self) -> None:
        self.cpu_s = self.server.cpu_seconds() - self.cpu0
        machine1 = cpu_times()
        if self.machine0 and machine1:
            self.steal_pct = machine1.steal_pct_since(self.machine0)
        if self.metrics_url:
            self.mean_batch_size = mean_between(self.before, _batch_sizes(self.metrics_url))


@dataclass
class TargetRun:
    """What one server's run produced."""

    rows: list[LevelResult] = field(default_factory=list)
    open_loop: list[OpenLoopRow] = field(default_factory=list)
    profile: ProfileRow | None = None
    memory: MemoryResult | None = None
    notes: list[str] = field(default_factory=list)


def measure_target(
    target: Target,
    bodies: BodySet,
    generator: Generator,
    config: Config,
    work: Path,
    *,
    open_loop: bool,
    profile: bool,
) -> TargetRun:
    """Start ``target``, drive it, stop it."""
    port = free_port()
    progress(f"{target.name}: starting on port {port}")
    out = TargetRun()
    with running(
        target.name,
        target.command(port, work),
        port,
        target.ready_path,
        work / f"{target.name}.log",
        env=target.env,
        timeout_s=config.start_timeout_s,
    ) as server:
        url = server.base_url + target.predict_path
        _first_answer(server, url, bodies, config.start_timeout_s)
        metrics_url = server.base_url + target.metrics_path if target.metrics_path else None
        ready_rss = server.rss_bytes()
        cpu_start = server.cpu_seconds()
        warm_rss: int | None = None
        for level in config.concurrency:
            _settle(server, out.notes)
            generator.measure(url, bodies, level, config.warmup_s)
            _settle(server, out.notes)
            if warm_rss is None:
                warm_rss = server.rss_bytes()
            meter = _Meter.start(server, metrics_url)
            stats = generator.measure(url, bodies, level, config.duration_s)
            meter.stop()
            server.check_alive()
            batch = meter.mean_batch_size if metrics_url else target.fixed_batch_size
            row = LevelResult.from_stats(target.name, stats, batch, meter.cpu_s, meter.steal_pct)
            out.rows.append(row)
            steal = meter.steal_pct
            if steal is not None and steal >= STEAL_NOTE_PCT:
                out.notes.append(
                    f"{target.name} c={level}: the host took {steal:.0f}% of the machine's CPU "
                    "time meanwhile (steal): this level's figures understate the server"
                )
            progress(
                f"{target.name} c={level}: {row.rps:.1f} req/s, p50 {report.fmt(row.p50_ms)} ms, "
                f"p99 {report.fmt(row.p99_ms)} ms, {row.errors} errors"
            )
        if open_loop:
            out.open_loop = _open_loop(
                server, url, bodies, out.rows, config, out.notes, metrics_url
            )
            server.check_alive()
        if profile:
            out.profile = _profile(server, url, bodies, generator, config, work, out.notes)
            server.check_alive()
        end_rss = server.rss_bytes()
        cpu_total = server.cpu_seconds() - cpu_start
    assert warm_rss is not None
    out.memory = MemoryResult.from_bytes(ready_rss, warm_rss, end_rss, cpu_total)
    return out


def _open_loop(
    server: ServerProcess,
    url: str,
    bodies: BodySet,
    rows: list[LevelResult],
    config: Config,
    notes: list[str],
    metrics_url: str | None,
) -> list[OpenLoopRow]:
    name = server.name
    peak = max((r.rps for r in rows), default=0.0)
    if peak <= 0:
        notes.append(f"{name}: no open-loop phase (no closed-loop throughput to take shares of)")
        return []
    out = []
    for share in config.open_loop_shares:
        _settle(server, notes)
        meter = _Meter.start(server, metrics_url)
        result = openloop.measure(
            url,
            bodies.payloads,
            share * peak,
            config.open_loop_duration_s,
            timeout_s=config.request_timeout_s,
            python=config.python_load,
        )
        meter.stop()
        answered = result.ok + result.errors
        out.append(
            OpenLoopRow(
                name,
                share,
                peak,
                result,
                meter.mean_batch_size,
                1000.0 * meter.cpu_s / answered if answered else None,
                meter.steal_pct,
            )
        )
        kept = "kept up" if result.kept_up else "did NOT keep up"
        progress(
            f"{name} open loop at {share:.0%} of {peak:.0f} req/s: "
            f"sent {result.achieved_rps:.1f}/s "
            f"(generator {kept}), p50 {report.fmt(result.p50_ms)} ms, "
            f"p99 {report.fmt(result.p99_ms)} ms, {result.errors} errors"
        )
        if not result.kept_up:
            notes.append(
                f"{name} open loop at {share:.0%}: the generator did not keep to its schedule "
                f"(achieved {result.achieved_rps:.1f} of {result.target_rps:.1f} req/s, send lag "
                f"p99 {report.fmt(result.send_lag_p99_ms)} ms, "
                f"{result.waited_for_connection} waits for a connection)"
            )
    return out


def _profile(
    server: ServerProcess,
    url: str,
    bodies: BodySet,
    generator: Generator,
    config: Config,
    work: Path,
    notes: list[str],
) -> ProfileRow | None:
    py_spy = profiling.executable()
    if py_spy is None:
        notes.append("no profile: py-spy is not installed (pip install py-spy)")
        progress(notes[-1])
        return None
    output = work / f"{server.name}.profile.txt"
    level = config.profile_concurrency
    progress(f"{server.name}: profiling at c={level} for {config.profile_duration_s:.0f} s")
    _settle(server, notes)
    sampler = profiling.start(py_spy, server.process.pid, config.profile_duration_s, output)
    try:
        stats = generator.measure(url, bodies, level, config.profile_duration_s + _PROFILE_MARGIN_S)
        _out, err = sampler.communicate(timeout=config.profile_duration_s + 60)
    except subprocess.TimeoutExpired:
        sampler.kill()
        sampler.communicate()
        notes.append(f"no profile of {server.name}: py-spy did not finish")
        return None
    if sampler.returncode != 0 or not output.exists():
        message = err.decode(errors="replace").strip()[-500:]
        notes.append(f"no profile of {server.name}: py-spy exited {sampler.returncode}: {message}")
        progress(notes[-1])
        return None
    reduced = profiling.reduce(output.read_text(errors="replace"))
    return ProfileRow(server.name, level, config.profile_duration_s, stats.rps, reduced)


def _settle(server: ServerProcess, notes: list[str]) -> None:
    waited = server.wait_idle(_SETTLE_MAX_S)
    if waited >= _SETTLE_MAX_S:
        note = f"{server.name} was still busy {_SETTLE_MAX_S:.0f} s after a phase ended"
        if note not in notes:
            notes.append(note)
            progress(note)


def _first_answer(server: ServerProcess, url: str, bodies: BodySet, timeout_s: float) -> None:
    """Wait until a real request is answered 2xx: some servers (mosec) say they are up
    before their workers have loaded the model."""
    payload = bodies.payloads[0]
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(trust_env=False, timeout=timeout_s) as client:
        while time.monotonic() < deadline:
            server.check_alive()
            try:
                response = client.post(
                    url, content=payload.body, headers={"content-type": payload.content_type}
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            time.sleep(0.5)
    raise ServerFailed(
        f"{server.name} never answered a request ({last}):\n{log_tail(server.log_file)}"
    )


def _batch_sizes(url: str | None) -> HistogramTotals | None:
    if url is None:
        return None

    async def read() -> HistogramTotals | None:
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            return await read_batch_sizes(client, url)

    try:
        return asyncio.run(read())
    except httpx.HTTPError:
        return None


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
