"""``python -m bench.run``: this service vs a naive endpoint vs the in-process limit.

Starts each server in turn on 127.0.0.1 (never two at once), drives it with the async load
generator at each concurrency level, then measures the in-process limit with no server
running. Prints one table and the ratios, writes every figure to
``bench/results/<UTC timestamp>.json`` and rewrites ``BENCHMARKS.md``.
MMSERVE_* variables set by the caller reach the service (e.g. batching settings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import inprocess, inputs, report
from bench.load import Payload, client_pool, encode_multipart, run_phase
from bench.machine import machine_info
from bench.metrics import mean_between, read_batch_sizes
from bench.results import NAIVE, SERVICE, BenchReport, LevelResult, MemoryResult, compute_ratios
from bench.servers import (
    ROOT,
    ServerFailed,
    ServerProcess,
    free_port,
    naive_command,
    running,
    server_env,
    service_command,
)
from service import model_store
from service.errors import ServiceError


@dataclass(frozen=True)
class Defaults:
    """What options left unset default to."""

    concurrency: str
    duration: float
    warmup: float
    images: int
    repetitions: int


FULL = Defaults("1,8,32,64", 10.0, 2.0, inputs.DEFAULT_COUNT, 200)
QUICK = Defaults("1,4", 1.0, 0.5, 8, 20)


@dataclass(frozen=True)
class Config:
    """One run's settings, after ``--quick`` and explicit options are combined."""

    model_store: Path
    model_name: str
    concurrency: list[int]
    duration_s: float
    requests: int | None
    warmup_s: float
    images: int
    image_side: int
    repetitions: int
    inprocess_duration_s: float
    start_timeout_s: float
    request_timeout_s: float
    results_dir: Path
    markdown: Path | None


def build_parser() -> argparse.ArgumentParser:
    """The command line; options left unset take the full (or ``--quick``) defaults."""
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark this service against a naive endpoint and the in-process "
        "limit. MMSERVE_* variables reach the service.",
    )
    p.add_argument("--model-store", type=Path, default=Path("model_store"), help="model store")
    p.add_argument("--model-name", default="demo", help="model (latest version)")
    p.add_argument("--concurrency", help="comma-separated levels (default 1,8,32,64)")
    p.add_argument("--duration", type=float, help="measured seconds per level (default 10)")
    p.add_argument("--requests", type=int, help="measure this many requests per level instead")
    p.add_argument("--warmup", type=float, help="warm-up seconds per level, excluded (default 2)")
    p.add_argument("--images", type=int, help="distinct images sent (default 48)")
    p.add_argument("--image-side", type=int, default=inputs.DEFAULT_SIDE, help="image side, px")
    p.add_argument("--inprocess-repetitions", type=int, help="batch-1 calls timed (default 200)")
    p.add_argument("--inprocess-duration", type=float, help="batch-32 seconds (default duration)")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds to become ready")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results", help="JSON")
    p.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md", help="report file")
    p.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="tiny run: levels 1,4, 1 s, 8 images")
    return p


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse ``argv`` into a :class:`Config` (exits with a usage message on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    try:
        levels = [int(c) for c in (args.concurrency or base.concurrency).split(",")]
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 1,8,32")
    if not levels or min(levels) < 1:
        parser.error("concurrency levels must be at least 1")
    duration = float(args.duration if args.duration is not None else base.duration)
    if duration <= 0 or (args.requests is not None and args.requests < 1):
        parser.error("--duration and --requests must be positive")
    return Config(
        model_store=args.model_store,
        model_name=args.model_name,
        concurrency=levels,
        duration_s=duration,
        requests=args.requests,
        warmup_s=float(args.warmup if args.warmup is not None else base.warmup),
        images=int(args.images or base.images),
        image_side=args.image_side,
        repetitions=int(args.inprocess_repetitions or base.repetitions),
        inprocess_duration_s=float(args.inprocess_duration or duration),
        start_timeout_s=args.start_timeout,
        request_timeout_s=args.request_timeout,
        results_dir=args.results_dir,
        markdown=None if args.no_markdown else args.markdown,
    )


async def drive(
    server: ServerProcess,
    predict_path: str,
    metrics_path: str | None,
    payloads: list[Payload],
    config: Config,
    fixed_batch_size: float | None = None,
) -> tuple[list[LevelResult], MemoryResult]:
    """Load ``server`` at each level. The mean batch size comes from ``metrics_path`` (None
    when the server does not export it), or is ``fixed_batch_size`` without one."""
    ready_rss = server.rss_bytes()
    warm_rss: int | None = None
    rows = []
    url = server.base_url + predict_path
    async with client_pool(max(config.concurrency), config.request_timeout_s) as clients:
        client = clients[0]
        for level in config.concurrency:
            await run_phase(clients, url, payloads, level, duration_s=config.warmup_s)
            if warm_rss is None:
                warm_rss = server.rss_bytes()
            metrics_url = server.base_url + metrics_path if metrics_path else None
            before = await read_batch_sizes(client, metrics_url) if metrics_url else None
            stats = await run_phase(
                clients,
                url,
                payloads,
                level,
                duration_s=None if config.requests else config.duration_s,
                max_requests=config.requests,
            )
            after = await read_batch_sizes(client, metrics_url) if metrics_url else None
            server.check_alive()
            batch = mean_between(before, after) if metrics_url else fixed_batch_size
            row = LevelResult.from_stats(server.name, stats, batch)
            rows.append(row)
            _progress(
                f"{server.name} c={level}: {row.rps:.1f} req/s, p50 {report.fmt(row.p50_ms)} "
                f"ms, {row.errors} errors"
            )
    end_rss = server.rss_bytes()
    assert warm_rss is not None
    return rows, MemoryResult.from_bytes(ready_rss, warm_rss, end_rss)


def measure_servers(
    config: Config, version: model_store.ModelVersion, payloads: list[Payload], work: Path
) -> tuple[list[LevelResult], dict[str, MemoryResult], bool]:
    """The service, then the naive server, each stopped before the next starts. Returns
    the rows, each server's memory, and whether the service exported batch sizes."""
    memory: dict[str, MemoryResult] = {}
    port = free_port()
    _progress(f"service: starting on port {port}")
    with running(
        SERVICE,
        service_command(port, config.model_store, config.model_name),
        port,
        "/health/ready",
        work / "service.log",
        env=server_env(),
        timeout_s=config.start_timeout_s,
    ) as server:
        rows, memory[SERVICE] = asyncio.run(
            drive(server, "/v1/predict", "/metrics", payloads, config)
        )
    port = free_port()
    _progress(f"naive: starting on port {port}")
    with running(
        NAIVE,
        naive_command(port),
        port,
        "/health",
        work / "naive.log",
        env=server_env({"BENCH_NAIVE_MODEL": str(version.path.resolve())}),
        timeout_s=config.start_timeout_s,
    ) as server:
        # One request at a time through model.predict: a batch of one by construction.
        naive_rows, memory[NAIVE] = asyncio.run(
            drive(server, "/predict", None, payloads, config, fixed_batch_size=1.0)
        )
    # Without a /metrics endpoint (or its histogram) every service row reads None.
    has_metrics = any(r.mean_batch_size is not None for r in rows)
    return rows + naive_rows, memory, has_metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_config(raw_argv)
    try:
        version = model_store.resolve(config.model_store, config.model_name)
        metadata = model_store.load_metadata(version.path)
    except ServiceError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    samples = inputs.generate(config.images, config.image_side)
    payloads = [encode_multipart(s) for s in samples]
    with tempfile.TemporaryDirectory(prefix="mmserve-bench-") as tmp:
        work = Path(tmp)
        inputs.save(samples, work / "images")
        try:
            rows, memory, has_metrics = measure_servers(config, version, payloads, work)
            _progress("in-process: measuring")
            limit = inprocess.run_isolated(
                config.model_store,
                config.model_name,
                images=config.images,
                image_side=config.image_side,
                repetitions=config.repetitions,
                duration_s=config.inprocess_duration_s,
                warmup_s=config.warmup_s,
                log_file=work / "inprocess.log",
                # Loading takes as long as a server's start; then a generous second per call.
                timeout_s=config.start_timeout_s
                + 4 * (config.warmup_s + config.inprocess_duration_s)
                + config.repetitions,
            )
        except (ServerFailed, RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1

    result = BenchReport(
        timestamp=started.isoformat(timespec="seconds"),
        command=_command_line(raw_argv),
        model={
            "name": version.name,
            "version": version.version,
            "path": str(version.path.resolve()),
            "image_size": list(metadata.image_size),
            "labels": len(metadata.labels),
        },
        inputs={
            "count": len(samples),
            "side": config.image_side,
            "quality": inputs.JPEG_QUALITY,
            "mean_bytes": inputs.mean_bytes(samples),
        },
        config={
            "concurrency": config.concurrency,
            "duration_s": config.duration_s,
            "requests": config.requests,
            "warmup_s": config.warmup_s,
            "inprocess_repetitions": config.repetitions,
            "inprocess_duration_s": config.inprocess_duration_s,
            "mmserve_env": _mmserve_env(),
        },
        machine=machine_info(),
        rows=rows,
        memory=memory,
        inprocess=limit,
        ratios=compute_ratios(rows, limit),
        metrics_endpoint=has_metrics,
    )
    results_file = _write_json(result, config.results_dir, started)
    print()
    print(report.format_table(result))
    print()
    for line in [*report.ratio_lines(result), *report.memory_lines(result)]:
        print(line)
    print(f"\nresults: {results_file}")
    if config.markdown is not None:
        shown = _relative(results_file)
        report.write_markdown(result, config.markdown, shown)
        print(f"wrote {config.markdown}")
    return 0


def _write_json(result: BenchReport, folder: Path, started: datetime) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stem}.json"
    n = 1
    while path.exists():
        path = folder / f"{stem}-{n}.json"
        n += 1
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def _mmserve_env() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("MMSERVE_")}


def _command_line(argv: list[str]) -> str:
    """The invocation, with the MMSERVE_* settings that shaped it, for copying."""
    env = [f"{k}={shlex.quote(v)}" for k, v in _mmserve_env().items()]
    return " ".join([*env, shlex.join(["python", "-m", "bench.run", *argv])])


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
