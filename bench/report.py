"""The printed table, the ratios, and ``BENCHMARKS.md``."""

from __future__ import annotations

from pathlib import Path

from bench.results import NAIVE, SERVICE, BenchReport

_HEADER = ("target", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "batch")


def table_rows(report: BenchReport) -> list[tuple[str, ...]]:
    """One row per server and level, then the two in-process rows."""
    rows: list[tuple[str, ...]] = [
        (
            r.target,
            str(r.concurrency),
            f"{r.rps:.1f}",
            fmt(r.p50_ms),
            fmt(r.p95_ms),
            fmt(r.p99_ms),
            str(r.errors),
            fmt(r.mean_batch_size, 2),
        )
        for target in (SERVICE, NAIVE)
        for r in report.rows
        if r.target == target
    ]
    ip = report.inprocess
    rows.append(
        (
            "in-process, batch 1",
            "-",
            f"{ip.single_rps:.1f}",
            fmt(ip.single_p50_ms),
            fmt(ip.single_p95_ms),
            fmt(ip.single_p99_ms),
            "0",
            "1",
        )
    )
    rows.append(
        (
            f"in-process, batch {ip.batch_size}",
            "-",
            f"{ip.batch_items_per_s:.1f}",
            fmt(ip.batch_p50_ms),
            fmt(ip.batch_p95_ms),
            fmt(ip.batch_p99_ms),
            "0",
            str(ip.batch_size),
        )
    )
    return rows


def format_table(report: BenchReport) -> str:
    """The results as an aligned plain-text table."""
    rows = [_HEADER, *table_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(w) for cell, w in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        return "  ".join(cells)

    rule = "-" * len(line(_HEADER))
    return "\n".join([line(_HEADER), rule, *(line(row) for row in rows[1:])])


def ratio_lines(report: BenchReport) -> list[str]:
    """The comparisons, one sentence each."""
    ratios = report.ratios
    ip = report.inprocess
    lines = [
        f"service / naive throughput at concurrency {c}: {_times(v)}"
        for c, v in ratios.service_over_naive_rps.items()
    ]
    if ratios.service_over_inprocess_concurrency is not None:
        lines.append(
            f"service at concurrency {ratios.service_over_inprocess_concurrency} / in-process "
            f"batch {ip.batch_size} throughput: {_times(ratios.service_over_inprocess)}"
        )
    if ratios.service_p50_minus_inprocess_ms is not None:
        lines.append(
            "service p50 at concurrency 1 minus in-process single-request p50: "
            f"{ratios.service_p50_minus_inprocess_ms:+.2f} ms"
        )
    return lines


def memory_lines(report: BenchReport) -> list[str]:
    """Resident memory of each server after warm-up and at the end of its run."""
    return [
        f"{name}: {m.warm_mib:.0f} MiB after warm-up ({m.ready_mib:.0f} MiB when ready), "
        f"{m.end_mib:.0f} MiB at the end ({m.growth_pct:+.1f}%)"
        for name, m in report.memory.items()
    ]


def render_markdown(report: BenchReport, results_file: str) -> str:
    """``BENCHMARKS.md``: the latest run's table, ratios, memory, machine and command."""
    rows = [_HEADER, *table_rows(report)]
    header = "| " + " | ".join(rows[0]) + " |"
    align = "|" + "|".join([":---"] + ["---:"] * (len(_HEADER) - 1)) + "|"
    body = ["| " + " | ".join(row) + " |" for row in rows[1:]]
    machine = report.machine
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    inputs = report.inputs
    config = report.config
    model = report.model
    batch_note = (
        "read from the service's `/metrics` (`mmserve_batch_size` sum/count)"
        if report.metrics_endpoint
        else "not available: the service had no `/metrics` `mmserve_batch_size` histogram"
    )
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Written by `make bench` (`python -m bench.run`); do not edit by hand. Raw figures "
            f"of this run: `{results_file}` (results are git-ignored).",
            "",
            "One run, one machine, one model, one after the other:",
            "",
            "- **service**: `mmserve serve` as a separate process.",
            "- **naive**: `bench/naive_server.py`, an `async def` FastAPI endpoint that decodes "
            "with the same preprocessing and calls `model.predict` per request on the event "
            "loop (the usual hand-written endpoint).",
            "- **in-process**: the service's `TFClassifier` and preprocessing with no HTTP: "
            f"batch 1 (latency, {report.inprocess.single_repetitions} calls) and batch "
            f"{report.inprocess.batch_size} (throughput; images decoded on "
            f"{report.inprocess.decode_workers} threads). Decoding is included everywhere.",
            "",
            f"Each server level: {config['warmup_s']} s warm-up (not counted), then "
            + (
                f"{config['requests']} requests"
                if config["requests"]
                else f"{config['duration_s']} s measured"
            )
            + f", closed loop, {len(config['concurrency'])} levels. Inputs: "
            f"{inputs['count']} distinct {inputs['side']}x{inputs['side']} JPEGs (quality "
            f"{inputs['quality']}, mean {inputs['mean_bytes'] / 1024:.1f} KiB) with captions. "
            f"Model: `{model['name']}` version {model['version']} "
            f"(input {model['image_size'][0]}x{model['image_size'][1]}). "
            f"Mean batch size: {batch_note}. The load generator runs on the same machine "
            "and shares its CPUs.",
            "",
            "## Results (req/s; in-process batch rows: items/s and per-batch latency)",
            "",
            header,
            align,
            *body,
            "",
            "## Ratios",
            "",
            *(f"- {line}" for line in ratio_lines(report)),
            "",
            "## Memory (resident set)",
            "",
            *(f"- {line}" for line in memory_lines(report)),
            "",
            "## Machine",
            "",
            f"- {machine['platform']}, {machine['cpu_model']}",
            f"- {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable"
            + (f", cgroup quota {machine['cpu_quota']:g}" if machine["cpu_quota"] else "")
            + f"), {machine['ram_total_bytes'] / 1024**3:.1f} GiB RAM",
            f"- Python {machine['python']}; {packages}",
            f"- Run at {report.timestamp}",
            "",
            "## Command",
            "",
            "```bash",
            report.command,
            "```",
            *([""] + [f"Note: {n}" for n in report.notes] if report.notes else []),
            "",
        ]
    )


def write_markdown(report: BenchReport, path: Path, results_file: str) -> None:
    """Rewrite ``path`` with :func:`render_markdown`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_markdown(report, results_file), encoding="utf-8")
    tmp.replace(path)


def fmt(value: float | None, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"
