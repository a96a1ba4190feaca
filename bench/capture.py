"""What capturing traffic costs: `mmserve serve` under wrk at a fixed concurrency, capture
off and on (at rate 1.0 unless --rate) in turn (a fresh server per phase, settings being
read at start-up), with the capture folder's disk use checked against its budget after
each captured phase.

    python -m bench.capture --model-store model_store --model-name demo

Prints one Markdown table (and, with --json, the figures); the README quotes them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench import bodies, inputs, servers, wrk
from service.serving.capture.segments import folder_usage

_READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Phase:
    """One measured phase."""

    capture: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    written: float
    dropped: float
    disk_bytes: int  # files in blocks (as the budget counts them), 0 when off
    allocated_bytes: int  # what the file system reports (st_blocks), 0 when off


def _metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition (0 when absent)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _disk(folder: Path) -> tuple[int, int]:
    """(bytes as the budget counts them, bytes the file system allocated)."""
    # Every file and folder under it, hidden ones (segments being written, spares) included.
    allocated = sum(p.stat().st_blocks * 512 for p in folder.rglob("*"))
    return folder_usage(folder), allocated


def run_phase(args: argparse.Namespace, body_list: Path, capture: Path | None) -> Phase:
    """Start a server (capturing into ``capture`` when given), load it, read its metrics."""
    port = servers.free_port()
    env = {
        "MMSERVE_ACCESS_LOG": "false",
        "MMSERVE_RELOAD_POLL_S": "0",
        # This checkout's code, whichever checkout the environment was installed from.
        "PYTHONPATH": str(servers.ROOT),
    }
    if capture is not None:
        env |= {
            "MMSERVE_CAPTURE_DIR": str(capture),
            "MMSERVE_CAPTURE_RATE": str(args.rate),
            "MMSERVE_CAPTURE_MAX_BYTES": str(args.budget),
        }
    command = servers.service_command(port, args.model_store, args.model_name, workers=args.workers)
    log = Path(tempfile.mkdtemp()) / "server.log"
    with servers.running(
        "mmserve",
        command,
        port,
        "/health/ready",
        log,
        env=servers.server_env(env),
        timeout_s=_READY_TIMEOUT_S,
    ) as server:
        url = f"{server.base_url}/v1/predict"
        wrk.run(url, body_list, args.content_type, connections=args.connections, duration_s=2)
        result = wrk.run(
            url,
            body_list,
            args.content_type,
            connections=args.connections,
            duration_s=args.duration,
            threads=2,
        )
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    counted, allocated = _disk(capture) if capture is not None else (0, 0)
    return Phase(
        capture=f"rate {args.rate:g}" if capture is not None else "off",
        requests_per_s=round(result.ok / result.duration_s, 1),
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        written=_metric(metrics, "mmserve_capture_written_total"),
        dropped=_metric(metrics, "mmserve_capture_dropped_total"),
        disk_bytes=counted,
        allocated_bytes=allocated,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--model-name", default="demo")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=5 * 1024**2, help="capture_max_bytes")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="capture_rate of the captured phases (0..1]"
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="where to capture (a fresh folder is made inside it): the file system the "
        "captures go to sets much of the cost; default: the system's temporary folder",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 1:
        parser.error("--rate must be in (0, 1]")
    folder = Path(tempfile.mkdtemp(prefix="mmserve-capture-bench-", dir=args.folder))
    try:
        phases = _run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"concurrency {args.connections}, {args.duration:g} s per phase, budget {args.budget}, "
        f"captured under {folder.parent}"
    )
    print("| capture | req/s | p50 ms | p99 ms | errors | written | dropped | disk (counted) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in phases:
        print(
            f"| {p.capture} | {p.requests_per_s} | {p.p50_ms:.1f} | {p.p99_ms:.1f} | "
            f"{p.errors} | {p.written:g} | {p.dropped:g} | {p.disk_bytes} |"
        )
    off = [p for p in phases if p.capture == "off"]
    on = [p for p in phases if p.capture != "off"]
    print(
        f"capture at rate {args.rate:g} against off (medians over the rounds): "
        f"req/s x{_median(on, 'requests_per_s') / _median(off, 'requests_per_s'):.3f}, "
        f"p99 x{_median(on, 'p99_ms') / _median(off, 'p99_ms'):.3f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(p) for p in phases], indent=2))
    over = [p for p in phases if p.disk_bytes > args.budget or p.allocated_bytes > args.budget]
    return 1 if over or any(p.errors for p in phases) else 0


def _run(args: argparse.Namespace, folder: Path) -> list[Phase]:
    """Capture off and on in turn, ``args.rounds`` times, capturing under ``folder``."""
    samples = inputs.generate()
    payloads = [bodies.encode_multipart(sample) for sample in samples]
    args.content_type = payloads[0].content_type
    body_list = folder / "bodies.txt"
    body_list.write_text("\n".join(map(str, bodies.write(payloads, folder / "bodies"))) + "\n")
    phases = []
    for round_ in range(args.rounds):
        phases.append(run_phase(args, body_list, None))
        phases.append(run_phase(args, body_list, folder / f"captured-{round_}"))
    return phases


def _median(phases: list[Phase], figure: str) -> float:
    return float(statistics.median(getattr(p, figure) for p in phases))


if __name__ == "__main__":
    sys.exit(main())
