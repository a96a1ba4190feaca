"""``python -m bench.rounds``: the closed-loop comparison of ``bench.run``, repeated on fresh
servers, to tell a difference between two servers from the spread between runs.

One ``make bench`` measures each server once, in one process, for 10 s per level. A server
process can run a few percent faster or slower than another of the same code for as long
as it lives, and the machine's speed drifts over minutes, so two servers within about 5%
of each other can come out in either order in one run. This runs the service and the
peers (default: mosec) at a few levels (default 32 and 64), ``--rounds`` times (default 5),
each round on freshly started servers, one at a time, the order rotating from round to
round so that a drift falls on every server alike. It reports, per level:

- each server's req/s: the median of the rounds and their range;
- the service's req/s over each peer's, paired within a round: the median of the rounds'
  ratios, their range, and in how many rounds the service was at least as fast;
- the service's req/s at each level over its req/s at the level before, within a round.

It takes ``bench.run``'s options (``--concurrency``, ``--duration``, ``--warmup``,
``--workers``, ``--server-args``, ``--peers``, ...) plus ``--rounds``; a round of the
default two servers at two levels takes about a minute and a half. Prints Markdown tables
and writes every figure to ``bench/results/rounds-<UTC time>.json``; BENCHMARKS.md is left
alone.

    python -m bench.rounds --model-store model_store --model-name demo --rounds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import inputs, run
from bench.config import Config, parse_config
from bench.drive import measure_target, progress
from bench.machine import machine_info
from bench.results import SERVICE
from bench.servers import ServerFailed
from bench.targets import Target
from bench.wrk import WrkFailed
from service import model_store
from service.errors import ServiceError

DEFAULT_ROUNDS = 5
# What bench.run's options default to here when the command line leaves them unset.
_DEFAULTS = ("--concurrency", "32,64", "--peers", "mosec", "--skip", "floor,naive")


@dataclass(frozen=True)
class RoundRow:
    """One server at one level in one round."""

    round: int
    target: str
    concurrency: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    steal_pct: float | None = None  # the host's share of the machine's CPU time meanwhile


@dataclass(frozen=True)
class Spread:
    """A figure over the rounds: the median, the range, and how many rounds were at
    least ``1.0`` (meaningful for ratios)."""

    median: float
    low: float
    high: float
    at_least_one: int
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (one per round; at least one)."""
        if not values:
            raise ValueError("no round measured this figure")
        return cls(
            statistics.median(values),
            min(values),
            max(values),
            sum(v >= 1.0 for v in values),
            len(values),
        )


def rotation(plan: Sequence[Target], round_: int) -> list[Target]:
    """The order of round ``round_``: the plan rotated by one server per round."""
    shift = round_ % len(plan) if plan else 0
    return [*plan[shift:], *plan[:shift]]


def throughput(rows: Sequence[RoundRow]) -> dict[str, dict[int, Spread]]:
    """Each server's req/s at each level, over the rounds."""
    values: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        values.setdefault(row.target, {}).setdefault(row.concurrency, []).append(row.rps)
    return {
        target: {level: Spread.of(v) for level, v in sorted(levels.items())}
        for target, levels in values.items()
    }


def paired_ratios(rows: Sequence[RoundRow], mine: str, other: str) -> dict[int, Spread]:
    """``mine``'s req/s over ``other``'s at each level, one ratio per round that measured
    both there (a round that lost one of them gives none)."""
    by_key = {(r.round, r.target, r.concurrency): r.rps for r in rows}
    ratios: dict[int, list[float]] = {}
    for (round_, target, level), rps in by_key.items():
        if target != mine:
            continue
        theirs = by_key.get((round_, other, level))
        if theirs:
            ratios.setdefault(level, []).append(rps / theirs)
    return {level: Spread.of(v) for level, v in sorted(ratios.items())}


def scaling(rows: Sequence[RoundRow], target: str) -> dict[tuple[int, int], Spread]:
    """``target``'s req/s at each level over its req/s at the level before it, within a
    round: ``(level before, level) -> spread``."""
    by_round: dict[int, dict[int, float]] = {}
    for r in rows:
        if r.target == target:
            by_round.setdefault(r.round, {})[r.concurrency] = r.rps
    ratios: dict[tuple[int, int], list[float]] = {}
    for levels in by_round.values():
        ordered = sorted(levels)
        for low, high in itertools.pairwise(ordered):
            if levels[low] > 0:
                ratios.setdefault((low, high), []).append(levels[high] / levels[low])
    return {pair: Spread.of(v) for pair, v in sorted(ratios.items())}


def markdown(rows: Sequence[RoundRow], kinds: dict[str, str], header: str) -> str:
    """The report: every round's figures, then the spreads."""
    lines = [
        header,
        "",
        "| round | server | concurrency | req/s | p50 ms | p99 ms | errors | steal % |",
    ]
    lines.append("|---:|:---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lines.append(
            f"| {r.round + 1} | {r.target} | {r.concurrency} | {r.rps:,.1f} | "
            f"{_ms(r.p50_ms)} | {_ms(r.p99_ms)} | {r.errors} | {_ms(r.steal_pct)} |"
        )
    lines += ["", "req/s over the rounds (median, range):", ""]
    lines += ["| server | concurrency | median | lowest | highest | rounds |"]
    lines.append("|:---|---:|---:|---:|---:|---:|")
    for target, levels in throughput(rows).items():
        for level, s in levels.items():
            lines.append(
                f"| {target} | {level} | {s.median:,.1f} | {s.low:,.1f} | {s.high:,.1f} | "
                f"{s.rounds} |"
            )
    services = [t for t, kind in kinds.items() if kind == SERVICE]
    others = [t for t in kinds if t not in services]
    # Over each peer; between two rows of the service, the later over the earlier.
    pairs = [(me, o) for me in services for o in others]
    pairs += [(later, earlier) for i, earlier in enumerate(services) for later in services[i + 1 :]]
    if pairs:
        lines += ["", "Paired within each round (the service's req/s over the other's):", ""]
        lines += ["| ratio | concurrency | median | lowest | highest | rounds at >= 1 |"]
        lines.append("|:---|---:|---:|---:|---:|---:|")
        for me, other in pairs:
            for level, spread in paired_ratios(rows, me, other).items():
                lines.append(f"| {me} / {other} | {level} | {_ratio_cells(spread)} |")
    scaled = [(me, scaling(rows, me)) for me in services]
    if any(table for _me, table in scaled):
        lines += ["", "Each level over the level before, within a round:", ""]
        lines += ["| server | levels | median | lowest | highest | rounds at >= 1 |"]
        lines.append("|:---|---:|---:|---:|---:|---:|")
        for me, table in scaled:
            for (low, high), spread in table.items():
                lines.append(f"| {me} | {high} / {low} | {_ratio_cells(spread)} |")
    return "\n".join(lines) + "\n"


def _ratio_cells(s: Spread) -> str:
    return f"{s.median:.2f}x | {s.low:.2f}x | {s.high:.2f}x | {s.at_least_one} of {s.rounds}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def parse(argv: Sequence[str]) -> tuple[int, Config]:
    """``--rounds`` and ``bench.run``'s options (with this tool's defaults)."""
    own = argparse.ArgumentParser(
        prog="python -m bench.rounds",
        description="bench.run's closed loop, repeated on fresh servers (--rounds, default "
        f"{DEFAULT_ROUNDS}); every other option is bench.run's (python -m bench.run --help); "
        "defaults here: --concurrency 32,64 --peers mosec, no floor or naive rows.",
    )
    own.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds (at least 2)")
    args, rest = own.parse_known_args(argv)
    if args.rounds < 2:
        own.error("--rounds must be at least 2: one round is what bench.run measures")
    return args.rounds, parse_config([*_DEFAULTS, *rest])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds; return the exit status (1 when a server failed to start or the
    load generator failed, 2 when the model is missing)."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    rounds, config = parse(raw_argv)
    try:
        version = model_store.resolve(config.model_store, config.model_name)
    except ServiceError as exc:
        print(f"bench.rounds: {exc} (make model trains the demo model)", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    generator, notes = run.choose_generator(config)
    plan, _peers = run.plan_targets(config, version.path, notes)
    plan = [t for t in plan if t.kind in (SERVICE, "peer")]
    rows: list[RoundRow] = []
    samples = inputs.generate(config.images, config.image_side)
    with tempfile.TemporaryDirectory(prefix="mmserve-rounds-") as tmp:
        work = Path(tmp)
        bodies = run.body_sets(plan, samples, work)
        try:
            for round_ in range(rounds):
                for target in rotation(plan, round_):
                    progress(f"round {round_ + 1} of {rounds}: {target.name}")
                    try:
                        measured = measure_target(
                            target,
                            bodies[target.body_format],
                            generator,
                            config,
                            work,
                            open_loop=False,
                            profile=False,
                        )
                    except ServerFailed as exc:
                        if target.kind != "peer":
                            raise
                        notes.append(f"round {round_ + 1}: {target.name} failed: {str(exc)[:300]}")
                        continue
                    notes.extend(n for n in measured.notes if n not in notes)
                    rows += [
                        RoundRow(
                            round_,
                            r.target,
                            r.concurrency,
                            r.rps,
                            r.p50_ms,
                            r.p99_ms,
                            r.errors,
                            r.steal_pct,
                        )
                        for r in measured.rows
                    ]
        except (ServerFailed, WrkFailed, RuntimeError) as exc:
            print(f"bench.rounds: {exc}", file=sys.stderr)
            return 1
    kinds = {t.name: t.kind for t in plan}
    machine = machine_info()
    header = (
        f"{rounds} rounds on {machine['cpus_usable']} CPUs ({machine['cpu_model']}), "
        f"{started.isoformat(timespec='seconds')}; load: {generator.name}, "
        f"{config.duration_s:g} s per level after {config.warmup_s:g} s of warm-up; "
        f"model {version.name} version {version.version}"
    )
    print()
    print(markdown(rows, kinds, header))
    for note in notes:
        print(f"note: {note}")
    config.results_dir.mkdir(parents=True, exist_ok=True)
    out = config.results_dir / f"rounds-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    record = {
        "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.rounds", *raw_argv]),
        "rounds": rounds,
        "targets": kinds,
        "config": {
            "concurrency": config.concurrency,
            "duration_s": config.duration_s,
            "warmup_s": config.warmup_s,
            "workers": config.workers,
            "server_args": config.server_args,
        },
        "generator": generator.name,
        "machine": machine,
        "rows": [asdict(r) for r in rows],
        "notes": notes,
    }
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
