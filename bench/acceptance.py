"""The capacity targets a run is read against, each with its figure and met/missed.

The targets are ratios within one run (machines of one kind differ in CPU speed): against
the peers at each level, the service's own tail and scaling, open-loop latency at 80% of
its peak, memory growth over its run, and errors. A target whose figures the run lacks
(a peer skipped, a level not measured) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.results import BenchReport, LevelResult

PEER_KIND = "peer"


@dataclass(frozen=True)
class Check:
    """One target, what the run measured for it, and whether it was met."""

    target: str
    measured: str
    met: bool


def checks(report: BenchReport, service: str) -> list[Check]:
    """Every target that ``service``'s rows in ``report`` can be read against."""
    rows: dict[tuple[str, int], LevelResult] = {(r.target, r.concurrency): r for r in report.rows}
    peers = [t for t, kind in report.targets.items() if kind == PEER_KIND]
    out: list[Check] = []

    def rps(target: str, level: int) -> float | None:
        row = rows.get((target, level))
        return row.rps if row is not None else None

    for level, factor_by_peer in (
        (32, {"mosec": 1.0, "mlserver": 1.3}),
        (64, {"mosec": 1.0, "mlserver": 1.3}),
        (1, dict.fromkeys(peers, 1.3)),
        (8, dict.fromkeys(peers, 1.3)),
    ):
        mine = rps(service, level)
        for peer, factor in factor_by_peer.items():
            theirs = rps(peer, level)
            if mine is None or theirs is None or peer not in peers:
                continue
            out.append(
                Check(
                    f"c={level}: >= {factor:g}x {peer}'s throughput",
                    f"{mine:.1f} vs {theirs:.1f} req/s ({mine / theirs:.2f}x)"
                    if theirs
                    else f"{mine:.1f} vs 0 req/s",
                    theirs == 0 or mine >= factor * theirs,
                )
            )
    for level in (8, 32, 64):
        row = rows.get((service, level))
        if row is not None and row.p50_ms and row.p99_ms is not None:
            tail = row.p99_ms / row.p50_ms
            out.append(
                Check(
                    f"c={level}: p99 <= 3x p50",
                    f"p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms ({tail:.2f}x)",
                    tail <= 3.0,
                )
            )
    at32, at64 = rps(service, 32), rps(service, 64)
    if at32 is not None and at64 is not None:
        out.append(
            Check(
                "throughput at c=64 >= at c=32",
                f"{at64:.1f} vs {at32:.1f} req/s",
                at64 >= at32,
            )
        )
    for o in report.open_loop:
        if o.target == service and abs(o.share_of_peak - 0.8) < 1e-9 and o.result.p99_ms:
            out.append(
                Check(
                    "open loop at 80% of peak: p99 < 100 ms",
                    f"p99 {o.result.p99_ms:.1f} ms at {o.result.achieved_rps:.1f} req/s",
                    o.result.p99_ms < 100.0,
                )
            )
    memory = report.memory.get(service)
    if memory is not None:
        out.append(
            Check(
                "RSS growth over its whole run < 5%",
                f"{memory.warm_mib:.0f} -> {memory.end_mib:.0f} MiB ({memory.growth_pct:+.1f}%)",
                memory.growth_pct < 5.0,
            )
        )
    errors = sum(r.errors for r in report.rows if r.target == service)
    out.append(Check("0 errors at every level", f"{errors} errors", errors == 0))
    return out


def lines(report: BenchReport) -> list[str]:
    """One line per check, per service row set: ``met``/``MISSED``, target, figures."""
    return [
        f"{service}: {'met' if c.met else 'MISSED'}: {c.target}: {c.measured}"
        for service in report.service_targets
        for c in checks(report, service)
    ]
