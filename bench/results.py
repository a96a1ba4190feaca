"""The figures one run produces, and the ratios derived from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.inprocess import InProcessResult
from bench.load import PhaseStats

SERVICE = "service"
NAIVE = "naive"


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

    @classmethod
    def from_stats(
        cls, target: str, stats: PhaseStats, mean_batch_size: float | None
    ) -> LevelResult:
        """Summarise a measured phase."""
        return cls(
            target=target,
            concurrency=stats.concurrency,
            requests=stats.ok,
            errors=stats.errors,
            error_kinds=dict(stats.error_kinds),
            elapsed_s=stats.elapsed_s,
            rps=stats.rps,
            p50_ms=stats.percentile_ms(50),
            p95_ms=stats.percentile_ms(95),
            p99_ms=stats.percentile_ms(99),
            mean_batch_size=mean_batch_size,
        )


@dataclass(frozen=True)
class MemoryResult:
    """Resident memory of a server process, in MiB."""

    ready_mib: float
    warm_mib: float
    end_mib: float
    growth_pct: float

    @classmethod
    def from_bytes(cls, ready: int, warm: int, end: int) -> MemoryResult:
        """Growth is measured from after the first warm-up, when caches are filled."""
        mib = 1024.0 * 1024.0
        return cls(ready / mib, warm / mib, end / mib, (end - warm) / warm * 100.0)


@dataclass(frozen=True)
class Ratios:
    """How the service compares with the naive endpoint and with the in-process limit."""

    service_over_naive_rps: dict[int, float | None]
    service_over_inprocess: float | None
    service_over_inprocess_concurrency: int | None
    service_p50_minus_inprocess_ms: float | None


@dataclass
class BenchReport:
    """Everything one run measured, with what it ran on and how it was invoked."""

    timestamp: str
    command: str
    model: dict[str, Any]
    inputs: dict[str, Any]
    config: dict[str, Any]
    machine: dict[str, Any]
    rows: list[LevelResult]
    memory: dict[str, MemoryResult]
    inprocess: InProcessResult
    ratios: Ratios
    metrics_endpoint: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        return asdict(self)


def compute_ratios(
    rows: list[LevelResult], inprocess: InProcessResult, compare_at: int = 32
) -> Ratios:
    """Service/naive throughput per level; service at ``compare_at`` (or the nearest lower
    level measured) over in-process batches; service p50 at concurrency 1 minus the
    in-process single-request p50."""
    service = {r.concurrency: r for r in rows if r.target == SERVICE}
    naive = {r.concurrency: r for r in rows if r.target == NAIVE}
    over_naive = {
        c: (service[c].rps / naive[c].rps if c in naive and naive[c].rps > 0 else None)
        for c in sorted(service)
    }
    lower = [c for c in service if c <= compare_at]
    level = max(lower) if lower else None
    over_inprocess = (
        service[level].rps / inprocess.batch_items_per_s
        if level is not None and inprocess.batch_items_per_s > 0
        else None
    )
    single = service.get(1)
    p50_gap = (
        single.p50_ms - inprocess.single_p50_ms
        if single is not None and single.p50_ms is not None
        else None
    )
    return Ratios(over_naive, over_inprocess, level, p50_gap)
