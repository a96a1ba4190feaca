"""``python -m bench.run``'s command line, and one run's settings."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import inputs
from bench.servers import ROOT
from bench.targets import PEER_NAMES

# What --skip accepts besides a peer's name.
SKIPPABLE = ("service", "floor", "naive", "open-loop", "profile", *PEER_NAMES)


@dataclass(frozen=True)
class ModelProfile:
    """A model the bench can serve: its store name, when missing how to train it, and
    the report file its runs rewrite by default."""

    name: str
    model_name: str
    train_args: tuple[str, ...]
    about: str
    markdown: Path


PROFILES = {
    "demo": ModelProfile(
        "demo",
        "demo",
        ("--demo",),
        "the demo model (small CNN, 64x64): serving costs dominate",
        ROOT / "BENCHMARKS.md",
    ),
    "mobilenet": ModelProfile(
        "mobilenet",
        "bench-mobilenet",
        # Untrained weights are as costly as trained ones: a few epochs on a small demo
        # set are enough for a servable artifact whose forward pass dominates the cost.
        (
            "--demo",
            "--name",
            "bench-mobilenet",
            "--backbone",
            "mobilenet_v3_small",
            "--image-size",
            "224",
            "--image-weights",
            "none",
            "--epochs",
            "2",
            "--demo-count",
            "240",
        ),
        "mobilenet_v3_small at 224x224 (weights none): the model dominates the cost",
        ROOT / "bench" / "BENCHMARKS-mobilenet.md",
    ),
}


@dataclass(frozen=True)
class Defaults:
    """What options left unset default to."""

    concurrency: str
    duration: float
    warmup: float
    images: int
    repetitions: int
    profile_duration: float
    peers: str


FULL = Defaults("1,8,32,64", 10.0, 2.0, inputs.DEFAULT_COUNT, 200, 10.0, ",".join(PEER_NAMES))
QUICK = Defaults("1,4", 1.0, 1.0, 8, 20, 1.0, "")


@dataclass(frozen=True)
class Config:
    """One run's settings, after ``--quick`` and explicit options are combined."""

    model_store: Path
    model_profile: ModelProfile
    model_name: str
    concurrency: list[int]
    duration_s: float
    warmup_s: float
    images: int
    image_side: int
    repetitions: int
    inprocess_duration_s: float
    start_timeout_s: float
    request_timeout_s: float
    results_dir: Path
    markdown: Path | None
    server_args: list[str]
    workers: list[int] | None
    peers: list[str]
    skip: frozenset[str]
    open_loop_shares: list[float]
    open_loop_duration_s: float
    profile_concurrency: int
    profile_duration_s: float
    python_load: bool
    wrk_threads: int


def build_parser() -> argparse.ArgumentParser:
    """The command line; options left unset take the full (or ``--quick``) defaults."""
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark this service against the constant-answer HTTP floor, a "
        "naive endpoint, peer servers and the in-process limit, with wrk when installed. "
        "MMSERVE_* variables reach the service.",
    )
    p.add_argument("--model-store", type=Path, default=Path("model_store"), help="model store")
    p.add_argument(
        "--model-profile",
        choices=sorted(PROFILES),
        default="demo",
        help="demo (default) or mobilenet (mobilenet_v3_small 224x224, trained when missing)",
    )
    p.add_argument("--model-name", help="model to serve (default: the profile's)")
    p.add_argument("--concurrency", help="comma-separated levels (default 1,8,32,64)")
    p.add_argument("--duration", type=float, help="measured seconds per level (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per level, excluded (default 2)")
    p.add_argument("--images", type=int, help=f"distinct images (default {inputs.DEFAULT_COUNT})")
    p.add_argument("--image-side", type=int, default=inputs.DEFAULT_SIDE, help="image side, px")
    p.add_argument("--inprocess-repetitions", type=int, help="batch-1 calls timed (default 200)")
    p.add_argument("--inprocess-duration", type=float, help="batch-32 seconds (default duration)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to become ready")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results", help="JSON")
    p.add_argument(
        "--markdown",
        type=Path,
        help="report file (default BENCHMARKS.md; bench/BENCHMARKS-mobilenet.md for mobilenet)",
    )
    p.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="tiny run: levels 1,4, 1 s, no peers")
    p.add_argument(
        "--server-args",
        default="",
        help='extra `mmserve serve` options: --server-args="--workers 2"',
    )
    p.add_argument(
        "--workers", help="comma-separated `mmserve serve --workers` values, one row set each"
    )
    p.add_argument(
        "--peers", help=f"comma-separated peers (default {','.join(PEER_NAMES)}; none: '')"
    )
    p.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {SKIPPABLE}")
    p.add_argument(
        "--open-loop", default="0.5,0.8", help="fixed arrival rates, as shares of the peak"
    )
    p.add_argument("--open-loop-duration", type=float, help="seconds per rate (default duration)")
    p.add_argument("--profile-concurrency", type=int, default=32, help="load while profiling")
    p.add_argument("--profile-duration", type=float, help="seconds of sampling (default 10)")
    p.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python generators (closed and open loop) instead of wrk and the C client",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    return p


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse ``argv`` into a :class:`Config` (exits with a usage message on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    levels = _ints(parser, "--concurrency", args.concurrency or base.concurrency)
    workers = _ints(parser, "--workers", args.workers) if args.workers else None
    duration = float(args.duration if args.duration is not None else base.duration)
    if duration <= 0:
        parser.error("--duration must be positive")
    peers = _names(args.peers if args.peers is not None else base.peers)
    skip = frozenset(_names(args.skip))
    unknown = [n for n in [*peers, *skip] if n not in SKIPPABLE]
    if unknown or any(p not in PEER_NAMES for p in peers):
        parser.error(f"unknown peer or part {unknown}; choose from {SKIPPABLE}")
    try:
        shares = [float(x) for x in _names(args.open_loop)]
    except ValueError:
        parser.error("--open-loop takes comma-separated shares, e.g. 0.5,0.8")
    if any(not 0 < s <= 2 for s in shares):
        parser.error("--open-loop shares must lie in (0, 2]")
    profile = PROFILES[args.model_profile]
    return Config(
        model_store=args.model_store,
        model_profile=profile,
        model_name=args.model_name or profile.model_name,
        concurrency=levels,
        duration_s=duration,
        warmup_s=float(args.warmup if args.warmup is not None else base.warmup),
        images=int(args.images or base.images),
        image_side=args.image_side,
        repetitions=int(args.inprocess_repetitions or base.repetitions),
        inprocess_duration_s=float(args.inprocess_duration or duration),
        start_timeout_s=args.start_timeout,
        request_timeout_s=args.request_timeout,
        results_dir=args.results_dir,
        markdown=None if args.no_markdown else (args.markdown or profile.markdown),
        server_args=shlex.split(args.server_args),
        workers=workers,
        peers=[p for p in peers if p not in skip],
        skip=skip,
        open_loop_shares=shares,
        open_loop_duration_s=float(args.open_loop_duration or duration),
        profile_concurrency=args.profile_concurrency,
        profile_duration_s=float(args.profile_duration or base.profile_duration),
        python_load=args.python_load,
        wrk_threads=args.wrk_threads,
    )


def _ints(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    try:
        values = [int(x) for x in _names(text)]
    except ValueError:
        parser.error(f"{option} takes comma-separated integers, e.g. 1,8,32")
    if not values or min(values) < 1:
        parser.error(f"{option} values must be at least 1")
    return values


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]
