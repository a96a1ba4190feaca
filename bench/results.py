"""The figures one run produces, and the ratios derived from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.closedloop import LoadStats
from bench.inprocess import InProcessResult
from bench.openloop import OpenLoopResult
from bench.profiling import FunctionShare, Profile

SERVICE = "service"
NAIVE = "naive"
FLOOR = "floor"


@dataclass(frozen=True)
class LevelResult:
    """One server at one concurrency level (measured phase only)."""

    target: str
    concurrency: int
    requests: int
    errors: int
    error_kinds: dict[str, int]
    elapsed_s: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_batch_size: float | None
    cpu_pct: float | None
    # The share of the machine's CPU time the host gave to others meanwhile (a virtual
    # machine's steal), in %; None where unknown (runs recorded before it was).
    steal_pct: float | None = None

    @classmethod
    def from_stats(
        cls,
        target: str,
        stats: LoadStats,
        mean_batch_size: float | None,
        cpu_s: float | None,
        steal_pct: float | None = None,
    ) -> LevelResult:
        """Summarise a measured phase; ``cpu_s`` is the server's CPU time during it."""
        return cls(
            target=target,
            concurrency=stats.concurrency,
            requests=stats.ok,
            errors=stats.errors,
            error_kinds=dict(stats.error_kinds),
            elapsed_s=stats.elapsed_s,
            rps=stats.rps,
            p50_ms=stats.p50_ms,
            p95_ms=stats.p95_ms,
            p99_ms=stats.p99_ms,
            mean_batch_size=mean_batch_size,
            cpu_pct=(100.0 * cpu_s / stats.elapsed_s)
            if cpu_s is not None and stats.elapsed_s > 0
            else None,
            steal_pct=steal_pct,
        )


@dataclass(frozen=True)
class OpenLoopRow:
    """One server under a fixed arrival rate, a share of its closed-loop peak."""

    target: str
    share_of_peak: float
    peak_rps: float
    result: OpenLoopResult
    # What the server did meanwhile, as for a closed-loop level: its mean batch size (from
    # /metrics), its CPU time per answered request and the host's steal.
    mean_batch_size: float | None = None
    cpu_ms_per_request: float | None = None
    steal_pct: float | None = None


@dataclass(frozen=True)
class ProfileRow:
    """A server sampled while driven at ``concurrency``, and what the load did meanwhile."""

    target: str
    concurrency: int
    duration_s: float
    rps: float
    profile: Profile


@dataclass(frozen=True)
class MemoryResult:
    """Resident memory of a server (all its processes), in MiB."""

    ready_mib: float
    warm_mib: float
    end_mib: float
    growth_pct: float
    cpu_s: float

    @classmethod
    def from_bytes(cls, ready: int, warm: int, end: int, cpu_s: float) -> MemoryResult:
        """Growth runs from after the first warm-up (caches filled) to the end of the
        server's whole run (every level, open loop and profile)."""
        mib = 1024.0 * 1024.0
        return cls(ready / mib, warm / mib, end / mib, (end - warm) / warm * 100.0, cpu_s)


@dataclass(frozen=True)
class Ratios:
    """How each service row compares with the in-process limit and the other targets."""

    # service target -> the level compared with in-process batches, and the ratio.
    over_inprocess: dict[str, tuple[int, float | None]]
    # service target -> other target -> level -> service req/s over the other's.
    over_targets: dict[str, dict[str, dict[int, float | None]]]
    # service target -> level -> p99 / p50.
    tail: dict[str, dict[int, float | None]]
    # service target -> its p50 at concurrency 1 minus the in-process single-request p50.
    p50_minus_inprocess_ms: dict[str, float | None]


@dataclass
class BenchReport:
    """Everything one run measured, with what it ran on and how it was invoked."""

    timestamp: str
    command: str
    generator: str
    model: dict[str, Any]
    inputs: dict[str, Any]
    config: dict[str, Any]
    machine: dict[str, Any]
    targets: dict[str, str]
    rows: list[LevelResult]
    memory: dict[str, MemoryResult]
    inprocess: InProcessResult
    ratios: Ratios
    open_loop: list[OpenLoopRow] = field(default_factory=list)
    profiles: list[ProfileRow] = field(default_factory=list)
    peers: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics_endpoint: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchReport:
        """The report :meth:`to_json` wrote (ratios recomputed from the rows)."""
        rows = [LevelResult(**r) for r in data["rows"]]
        inprocess = InProcessResult(**data["inprocess"])

        def profile(p: dict[str, Any]) -> Profile:
            top_own = [FunctionShare(**f) for f in p["top_own"]]
            return Profile(p["samples"], top_own, [FunctionShare(**f) for f in p["top_total"]])

        fields = {k: data[k] for k in ("timestamp", "command", "generator", "model", "inputs")}
        fields |= {k: data[k] for k in ("config", "machine", "targets", "peers", "notes")}
        return cls(
            **fields,
            rows=rows,
            memory={k: MemoryResult(**v) for k, v in data["memory"].items()},
            inprocess=inprocess,
            ratios=compute_ratios(rows, data["targets"], inprocess),
            open_loop=[
                OpenLoopRow(
                    o["target"],
                    o["share_of_peak"],
                    o["peak_rps"],
                    OpenLoopResult(**o["result"]),
                    o.get("mean_batch_size"),
                    o.get("cpu_ms_per_request"),
                    o.get("steal_pct"),
                )
                for o in data["open_loop"]
            ],
            profiles=[
                ProfileRow(
                    p["target"], p["concurrency"], p["duration_s"], p["rps"], profile(p["profile"])
                )
                for p in data["profiles"]
            ],
            metrics_endpoint=data.get("metrics_endpoint"),
        )

    @property
    def service_targets(self) -> list[str]:
        """The service's rows' names, in run order."""
        return [t for t, kind in self.targets.items() if kind == SERVICE]


def compute_ratios(
    rows: list[LevelResult],
    targets: dict[str, str],
    inprocess: InProcessResult,
    compare_at: int = 32,
) -> Ratios:
    """For each service target: req/s at ``compare_at`` (or the nearest lower level
    measured) over in-process batches; req/s over every other target per level; p99/p50
    per level; p50 at concurrency 1 minus the in-process single-request p50."""
    by_target: dict[str, dict[int, LevelResult]] = {}
    for r in rows:
        by_target.setdefault(r.target, {})[r.concurrency] = r
    services = [t for t, kind in targets.items() if kind == SERVICE and t in by_target]
    others = [t for t in targets if targets[t] != SERVICE and t in by_target]
    over_inprocess: dict[str, tuple[int, float | None]] = {}
    over_targets: dict[str, dict[str, dict[int, float | None]]] = {}
    tail: dict[str, dict[int, float | None]] = {}
    p50_gap: dict[str, float | None] = {}
    for s in services:
        mine = by_target[s]
        lower = [c for c in mine if c <= compare_at]
        if lower:
            level = max(lower)
            over_inprocess[s] = (
                level,
                mine[level].rps / inprocess.batch_items_per_s
                if inprocess.batch_items_per_s > 0
                else None,
            )
        over_targets[s] = {
            o: {
                c: _ratio(mine[c].rps, by_target[o][c].rps if c in by_target[o] else None)
                for c in sorted(mine)
            }
            for o in [*others, *(x for x in services if x != s)]
        }
        tail[s] = {c: _ratio(mine[c].p99_ms, mine[c].p50_ms) for c in sorted(mine)}
        single = mine.get(1)
        p50_gap[s] = (
            single.p50_ms - inprocess.single_p50_ms
            if single is not None and single.p50_ms is not None
            else None
        )
    return Ratios(over_inprocess, over_targets, tail, p50_gap)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
