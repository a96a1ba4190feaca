"""What capturing traffic costs: `mmserve serve` capturing (at rate 1.0 unless --rate) and
not, loaded in turn by wrk at a fixed concurrency.

Each round starts a fresh pair of servers, one capturing and one not, and loads both, one
after the other; the order alternates from round to round (off then on, on then off, ...),
so that a drift in the machine's speed falls on both alike. A round's pair gives one ratio
(captured ÷ off); the cost reported is the median of the rounds' ratios, with their range.
Fresh servers every round, because one server process can run several percent faster or
slower than another of the same code for as long as it lives (measured: three servers
started together held 1,490, 1,380 and 1,390 req/s at concurrency 64 over two rounds each):
a pair kept for the whole run would carry its own bias into every round. After each
captured phase, once the writers have settled, the capture folder's disk use is checked
against its budget.

    python -m bench.capture --model-store model_store --model-name demo

Prints one Markdown table (and, with --json, the figures); the README quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench import bodies, inputs, metrics, servers, wrk
from service.serving.capture.segments import folder_usage
from service.serving.capture.writer import TICK_S

_READY_TIMEOUT_S = 180.0
_SETTLE_TIMEOUT_S = 30.0
_SCANS = 5
WRITTEN = "mmserve_capture_written_total"
DROPPED = "mmserve_capture_dropped_total"


@dataclass(frozen=True)
class Phase:
    """One measured phase."""

    round: int
    capture: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    written: float  # pairs written during the phase (its warm-up included)
    dropped: float
    disk_bytes: int  # the folder's files in blocks (as the budget counts them), 0 when off
    allocated_bytes: int  # what the file system reports (st_blocks), 0 when off


@dataclass(frozen=True)
class Ratio:
    """Captured ÷ off, the median over the rounds and the range."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"x{self.median:.3f} (rounds: x{self.low:.3f} to x{self.high:.3f})"


def round_ratios(phases: list[Phase], figure: str) -> Ratio:
    """``figure`` of each round's captured phase over its phase with capture off."""
    by_round: dict[int, dict[bool, float]] = {}
    for phase in phases:
        by_round.setdefault(phase.round, {})[phase.capture != "off"] = getattr(phase, figure)
    ratios = [pair[True] / pair[False] for pair in by_round.values() if len(pair) == 2]
    if not ratios:
        raise ValueError("no round has both phases")
    return Ratio(statistics.median(ratios), min(ratios), max(ratios))


def _disk(folder: Path) -> tuple[int, int]:
    """(bytes as the budget counts them, bytes the file system allocated). The server is
    still up: a segment it closes meanwhile (renamed) makes a scan start over."""
    for _ in range(_SCANS - 1):
        with contextlib.suppress(FileNotFoundError):
            return _scan(folder)
    return _scan(folder)


def _scan(folder: Path) -> tuple[int, int]:
    # Every file and folder under it, hidden ones (segments being written, spares) included.
    allocated = sum(p.stat().st_blocks * 512 for p in folder.rglob("*"))
    return folder_usage(folder), allocated


def _settled(base_url: str) -> tuple[float, float]:
    """Pairs written and dropped once the writers have written what was queued (the
    counts stay the same for a few of their wake-ups)."""
    counts = _counts(base_url)
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(3 * TICK_S)
        counts, before = _counts(base_url), counts
        if counts == before:
            break
    return counts


def _counts(base_url: str) -> tuple[float, float]:
    """Pairs written and dropped so far, from the server's metrics."""
    sums = metrics.sample_sums(httpx.get(f"{base_url}/metrics", timeout=10).text)
    return sums.get(WRITTEN, 0.0), sums.get(DROPPED, 0.0)


def run_phase(
    args: argparse.Namespace,
    body_list: Path,
    round_: int,
    server: servers.ServerProcess,
    capture: Path | None,
) -> Phase:
    """Load ``server`` (capturing into ``capture`` when given) and read what it wrote."""
    url = f"{server.base_url}/v1/predict"
    written, dropped = _counts(server.base_url)
    wrk.run(url, body_list, args.content_type, connections=args.connections, duration_s=2)
    result = wrk.run(
        url,
        body_list,
        args.content_type,
        connections=args.connections,
        duration_s=args.duration,
        threads=2,
    )
    written_after, dropped_after = _settled(server.base_url)
    counted, allocated = _disk(capture) if capture is not None else (0, 0)
    return Phase(
        round=round_,
        capture=f"rate {args.rate:g}" if capture is not None else "off",
        requests_per_s=round(result.ok / result.duration_s, 1),
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        written=written_after - written,
        dropped=dropped_after - dropped,
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
    parser.add_argument("--rounds", type=int, default=10)
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
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    folder = Path(tempfile.mkdtemp(prefix="mmserve-capture-bench-", dir=args.folder))
    try:
        phases = _run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"concurrency {args.connections}, {args.duration:g} s per phase, {args.rounds} rounds, "
        f"budget {args.budget}, captured under {folder.parent}"
    )
    print("| round | capture | req/s | p50 ms | p99 ms | errors | written | dropped | disk |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        print(
            f"| {p.round + 1} | {p.capture} | {p.requests_per_s} | {p.p50_ms:.1f} | "
            f"{p.p99_ms:.1f} | {p.errors} | {p.written:g} | {p.dropped:g} | {p.disk_bytes} |"
        )
    print(
        f"capture at rate {args.rate:g} against off, per round: "
        f"req/s {round_ratios(phases, 'requests_per_s')}, p50 {round_ratios(phases, 'p50_ms')}, "
        f"p99 {round_ratios(phases, 'p99_ms')}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(p) for p in phases], indent=2))
    over = [p for p in phases if p.disk_bytes > args.budget or p.allocated_bytes > args.budget]
    if over:
        print(f"the capture folder went over its budget in {len(over)} phases")
    return 1 if over or any(p.errors for p in phases) else 0


def _run(args: argparse.Namespace, folder: Path) -> list[Phase]:
    """``args.rounds`` rounds, each on a fresh pair of servers, the order alternating."""
    samples = inputs.generate()
    payloads = [bodies.encode_multipart(sample) for sample in samples]
    args.content_type = payloads[0].content_type
    body_list = folder / "bodies.txt"
    body_list.write_text("\n".join(map(str, bodies.write(payloads, folder / "bodies"))) + "\n")
    phases = []
    for round_ in range(args.rounds):
        captured = folder / f"captured-{round_}"
        with contextlib.ExitStack() as stack:
            up = {
                name: stack.enter_context(_server(args, name, captured)) for name in ("off", "on")
            }
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            for name in order:
                target = captured if name == "on" else None
                phases.append(run_phase(args, body_list, round_, up[name], target))
                print(_line(phases[-1]), file=sys.stderr, flush=True)
    return phases


def _server(
    args: argparse.Namespace, name: str, captured: Path
) -> contextlib.AbstractContextManager[servers.ServerProcess]:
    """A server capturing into ``captured`` (``name`` ``on``) or not (``off``), once ready."""
    env = {
        "MMSERVE_ACCESS_LOG": "false",
        "MMSERVE_RELOAD_POLL_S": "0",
        # This checkout's code, whichever checkout the environment was installed from.
        "PYTHONPATH": str(servers.ROOT),
    }
    if name == "on":
        env |= {
            "MMSERVE_CAPTURE_DIR": str(captured),
            "MMSERVE_CAPTURE_RATE": str(args.rate),
            "MMSERVE_CAPTURE_MAX_BYTES": str(args.budget),
        }
    port = servers.free_port()
    return servers.running(
        f"mmserve (capture {name})",
        servers.service_command(port, args.model_store, args.model_name, workers=args.workers),
        port,
        "/health/ready",
        Path(tempfile.mkdtemp()) / "server.log",
        env=servers.server_env(env),
        timeout_s=_READY_TIMEOUT_S,
    )


def _line(phase: Phase) -> str:
    """Progress: one phase, as it ends."""
    return (
        f"round {phase.round + 1}, capture {phase.capture}: {phase.requests_per_s} req/s, "
        f"p99 {phase.p99_ms:.1f} ms, {phase.errors} errors, {phase.written:g} written"
    )


if __name__ == "__main__":
    sys.exit(main())
