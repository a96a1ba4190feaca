"""The printed tables and ratios, and ``BENCHMARKS.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench import acceptance
from bench.openloop import MAX_SEND_LAG_P99_MS, MIN_ACHIEVED_SHARE
from bench.results import BenchReport, LevelResult

_LEVEL_HEADER = (
    "target",
    "concurrency",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "p99/p50",
    "errors",
    "batch",
    "server CPU %",
    "CPU ms/req",
    "steal %",
)


def fmt(value: float | None, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _errors(count: int, kinds: dict[str, int]) -> str:
    if not count:
        return "0"
    return f"{count} (" + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) + ")"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def level_rows(report: BenchReport) -> list[tuple[str, ...]]:
    """One row per server and level, then the two in-process rows."""
    rows: list[tuple[str, ...]] = []
    for r in report.rows:
        tail = r.p99_ms / r.p50_ms if r.p99_ms is not None and r.p50_ms else None
        rows.append(
            (
                r.target,
                str(r.concurrency),
                f"{r.rps:.1f}",
                fmt(r.p50_ms),
                fmt(r.p95_ms),
                fmt(r.p99_ms),
                fmt(tail),
                str(r.errors),
                fmt(r.mean_batch_size, 2),
                fmt(r.cpu_pct, 0),
                fmt(10.0 * r.cpu_pct / r.rps if r.cpu_pct is not None and r.rps else None, 2),
                fmt(r.steal_pct),
            )
        )
    ip = report.inprocess
    rows.append(
        (
            "in-process, batch 1",
            "-",
            f"{ip.single_rps:.1f}",
            fmt(ip.single_p50_ms),
            fmt(ip.single_p95_ms),
            fmt(ip.single_p99_ms),
            fmt(ip.single_p99_ms / ip.single_p50_ms if ip.single_p50_ms else None),
            "0",
            "1",
            "-",
            "-",
            "-",
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
            fmt(ip.batch_p99_ms / ip.batch_p50_ms if ip.batch_p50_ms else None),
            "0",
            str(ip.batch_size),
            "-",
            "-",
            "-",
        )
    )
    return rows


def side_by_side(report: BenchReport) -> tuple[tuple[str, ...], Sequence[tuple[str, ...]]]:
    """One row per level, one column per target: ``req/s (p99 ms)``."""
    names = list(report.targets)
    by: dict[tuple[str, int], LevelResult] = {(r.target, r.concurrency): r for r in report.rows}
    header = ("concurrency", *names)
    rows = []
    for c in report.config["concurrency"]:
        cells = [str(c)]
        for name in names:
            r = by.get((name, c))
            cells.append("-" if r is None else f"{r.rps:,.0f} ({fmt(r.p99_ms, 0)})")
        rows.append(tuple(cells))
    return header, rows


def _open_loop_generator(report: BenchReport) -> str:
    """Which generator drove the open-loop phases (`bench/openloop.py`)."""
    names = {o.result.generator for o in report.open_loop}
    described = {
        "c": "`bench/openloop_client.c` (C, one thread on epoll)",
        "python": "`bench/openloop.py`'s Python generator (asyncio + uvloop)",
    }
    return " and ".join(described.get(name, name) for name in sorted(names))


def open_loop_rows(report: BenchReport) -> tuple[tuple[str, ...], Sequence[tuple[str, ...]]]:
    """One row per open-loop phase."""
    header = (
        "target",
        "share of peak",
        "rate req/s",
        "achieved",
        "generator",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "2xx/s",
        "batch",
        "CPU ms/req",
        "steal %",
    )
    rows = []
    for o in report.open_loop:
        r = o.result
        rows.append(
            (
                o.target,
                f"{o.share_of_peak:.0%}",
                f"{r.target_rps:.1f}",
                f"{r.achieved_rps:.1f}",
                "kept up" if r.kept_up else "fell behind",
                fmt(r.p50_ms),
                fmt(r.p90_ms),
                fmt(r.p99_ms),
                fmt(r.max_ms),
                _errors(r.errors, r.error_kinds),
                f"{r.throughput_rps:.1f}",
                fmt(o.mean_batch_size, 2),
                fmt(o.cpu_ms_per_request, 2),
                fmt(o.steal_pct),
            )
        )
    return header, rows


def ratio_lines(report: BenchReport) -> list[str]:
    """The comparisons, one sentence each."""
    ratios = report.ratios
    ip = report.inprocess
    lines = []
    for s in report.service_targets:
        if s in ratios.over_inprocess:
            level, value = ratios.over_inprocess[s]
            lines.append(
                f"{s} at concurrency {level} / in-process batch {ip.batch_size} throughput: "
                f"{_times(value)}"
            )
        for other, per_level in ratios.over_targets.get(s, {}).items():
            cells = ", ".join(f"c={c} {_times(v)}" for c, v in per_level.items())
            lines.append(f"{s} / {other} throughput: {cells}")
        tail = ratios.tail.get(s, {})
        if tail:
            cells = ", ".join(f"c={c} {_times(v)}" for c, v in tail.items())
            lines.append(f"{s} p99 / p50: {cells}")
        gap = ratios.p50_minus_inprocess_ms.get(s)
        if gap is not None:
            lines.append(
                f"{s} p50 at concurrency 1 minus in-process single-request p50: {gap:+.2f} ms"
            )
    return lines


def memory_lines(report: BenchReport) -> list[str]:
    """Resident memory and CPU time of each server over its whole run."""
    return [
        f"{name}: {m.warm_mib:.0f} MiB after the first warm-up ({m.ready_mib:.0f} MiB when "
        f"ready), {m.end_mib:.0f} MiB at the end of its run ({m.growth_pct:+.1f}%); "
        f"{m.cpu_s:.1f} CPU-seconds in all"
        for name, m in report.memory.items()
    ]


def profile_blocks(report: BenchReport, markdown: bool) -> list[str]:
    """The top functions of each profile, own and total share of the samples."""
    out: list[str] = []
    for p in report.profiles:
        title = (
            f"{p.target} at concurrency {p.concurrency}: {p.profile.samples} samples in "
            f"{p.duration_s:.0f} s at 100 Hz (all processes, non-idle threads; {p.rps:.1f} "
            "req/s meanwhile)"
        )
        out += [f"### {title}" if markdown else title, ""]
        for label, shares in (("own", p.profile.top_own), ("total", p.profile.top_total)):
            header = ("function (file)", "own %", "total %")
            rows = [
                (f"`{s.function}`" if markdown else s.function, fmt(s.own_pct), fmt(s.total_pct))
                for s in shares
            ]
            out += [f"Top by {label} time:", ""]
            out += [*_table(header, rows, markdown), ""]
    return out


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], markdown: bool) -> list[str]:
    if markdown:
        align = "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"
        return [
            "| " + " | ".join(header) + " |",
            align,
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    all_rows = [header, *rows]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(w) for cell, w in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        return "  ".join(cells)

    return [line(header), "-" * len(line(header)), *(line(row) for row in rows)]


def format_table(report: BenchReport) -> str:
    """The closed-loop results as an aligned plain-text table."""
    return "\n".join(_table(_LEVEL_HEADER, level_rows(report), markdown=False))


def format_text(report: BenchReport) -> str:
    """Everything printed at the end of a run."""
    parts = [f"load generator: {report.generator}", "", format_table(report), ""]
    header, rows = side_by_side(report)
    parts += ["req/s (p99 ms) by concurrency:", *_table(header, rows, False), ""]
    if report.open_loop:
        header, rows = open_loop_rows(report)
        parts += ["open loop (latency from the scheduled send time):"]
        parts += [*_table(header, rows, False), ""]
    parts += [*ratio_lines(report), ""]
    targets = acceptance.lines(report)
    if targets:
        parts += ["capacity targets:", *targets, ""]
    parts += [*memory_lines(report), ""]
    parts += profile_blocks(report, markdown=False)
    parts += [f"note: {n}" for n in report.notes]
    return "\n".join(parts).rstrip()


def _meanings(report: BenchReport) -> list[str]:
    ip = report.inprocess
    lines = [
        "- **service**: `mmserve serve` as a separate process"
        + (
            f", once per `--workers` value ({', '.join(report.service_targets)})"
            if len(report.service_targets) > 1
            else ""
        )
        + (
            f"; extra options `{' '.join(report.config['server_args'])}`"
            if report.config["server_args"]
            else ""
        )
        + ".",
        "- **floor**: `bench/floor_server.py`, a FastAPI endpoint that parses the same "
        "multipart body and answers a constant JSON: what HTTP and multipart alone cost.",
        "- **naive**: `bench/naive_server.py`, an `async def` FastAPI endpoint that decodes "
        "with the same preprocessing and calls `model.predict` per request on the event loop.",
        "- **in-process**: the service's `TFClassifier` and preprocessing with no HTTP: batch 1 "
        f"(latency, {ip.single_repetitions} calls) and batch {ip.batch_size} (throughput; "
        f"images decoded on {ip.decode_workers} threads). Decoding is included everywhere.",
    ]
    if "mosec" in report.targets:
        lines.append(
            "- **mosec**: mosec 0.9.8 in its own venv (`bench/peers/mosec_server.py`): msgpack "
            'body `{"image": <bytes>, "text": <str>}` (the bodies are msgpack-encoded up '
            "front, not multipart), a decode stage of 2 processes, an inference stage with "
            "batch 32 and a 10 ms wait."
        )
    if "mlserver" in report.targets:
        lines.append(
            "- **mlserver**: MLServer 1.7.1 in its own venv (`bench/peers/mlserver_runtime.py`, "
            "a small custom runtime): Open Inference Protocol JSON with the image in base64, "
            "adaptive batching 32 / 10 ms, `parallel_workers=0`, uvloop 0.21.0."
        )
    if report.peers:
        lines.append(
            "- The peers load the same `model.keras` behind the same kind of compiled forward "
            "pass and decode with the project's own `preprocess_image`; TensorFlow, Keras, "
            "Pillow and numpy are pinned to the service's versions."
        )
    return lines


def _encoder(model: dict[str, object]) -> str:
    """', text encoder lstm' when the results name the model's text encoder."""
    encoder = model.get("text_encoder")
    return f", text encoder {encoder}" if encoder else ""


def render_markdown(report: BenchReport, results_file: str) -> str:
    """``BENCHMARKS.md``: the latest run, what the rows mean, and how to reproduce it."""
    machine = report.machine
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    inputs = report.inputs
    config = report.config
    model = report.model
    generator = (
        "`wrk` (C, one thread, a Lua script cycling through the pre-built bodies; percentiles "
        "from wrk's own latency histogram of every response)"
        if report.generator == "wrk"
        else "**the Python generator (wrk was not installed): it caps far below the servers "
        "at high concurrency**"
    )
    batch_note = (
        "read from the service's `/metrics` (`mmserve_batch_size` sum/count)"
        if report.metrics_endpoint
        else "not available (no `mmserve_batch_size` histogram at `/metrics`)"
    )
    side_header, side_rows = side_by_side(report)
    demo = model.get("profile", "demo") == "demo"
    lines = [
        "# Benchmarks" if demo else f"# Benchmarks: the {model['profile']} profile",
        "",
        f"Written by `make {'bench' if demo else 'bench-' + model['profile']}` (`python -m "
        "bench.run`); do not edit by hand. Raw figures of this run: "
        f"`{results_file}` (results are git-ignored).",
        "",
        f"Measured on {report.timestamp} on {machine['cpu_count']} CPUs "
        f"({machine['cpu_model']}), {machine['ram_total_bytes'] / 1024**3:.1f} GiB RAM; "
        f"load generator: {generator}, on the same machine, sharing its CPUs. Model: "
        f"`{model['name']}` version {model['version']} (input {model['image_size'][0]}x"
        f"{model['image_size'][1]}{_encoder(model)}; {model.get('about', '')}). Inputs: "
        f"{inputs['count']} "
        f"distinct {inputs['side']}x{inputs['side']} JPEGs (quality {inputs['quality']}, mean "
        f"{inputs['mean_bytes'] / 1024:.1f} KiB) with short captions. Each level: "
        f"{config['warmup_s']} s warm-up (not counted), then {config['duration_s']} s "
        f"measured, closed loop. Mean batch size: {batch_note}.",
        "",
        "## What the rows are",
        "",
        *_meanings(report),
        "",
        "## req/s (p99 ms) by concurrency",
        "",
        *_table(side_header, side_rows, markdown=True),
        "",
        "## Closed loop, every figure (in-process batch rows: items/s and per-batch latency)",
        "",
        "Errors are non-2xx answers plus socket errors. Server CPU: the server's processes' "
        "CPU time over the level, in % of one core, and per answered request. Steal: the "
        "share of the machine's CPU time that the host gave to others during the level (a "
        "virtual machine's steal time, from /proc/stat); a level with much of it understates "
        "its server.",
        "",
        *_table(_LEVEL_HEADER, level_rows(report), markdown=True),
        "",
        "## Ratios",
        "",
        *(f"- {line}" for line in ratio_lines(report)),
        "",
    ]
    targets = acceptance.lines(report)
    if targets:
        lines += [
            "## Capacity targets",
            "",
            "Ratios within this run: against the peers at each level, the service's own tail "
            "and scaling, open-loop p99 at 80% of its peak, memory growth, errors.",
            "",
            *(f"- {line}" for line in targets),
            "",
        ]
    if report.open_loop:
        header, rows = open_loop_rows(report)
        lines += [
            "## Open loop (fixed arrival rate)",
            "",
            "Requests leave on a fixed schedule at a share of the target's own closed-loop "
            "peak, whatever the server does; latency runs from the scheduled send time, so "
            "queueing cannot hide (no coordinated omission). "
            f"{_open_loop_generator(report)}, raw HTTP/1.1 over persistent connections, the "
            "same bodies, on the same machine. *kept up*: "
            f"the generator sent at least {MIN_ACHIEVED_SHARE:.0%} of the rate with send lag "
            f"p99 <= {MAX_SEND_LAG_P99_MS:g} ms and never waited for a connection. "
            f"{config['open_loop_duration_s']} s per rate. Batch, CPU per request and steal "
            "as in the closed loop: each model call has a fixed cost, so the CPU a request "
            "takes falls as batches grow; the peak comes from the deepest closed-loop "
            "level's batches, and a rate below it meets fewer requests waiting together.",
            "",
            *_table(header, rows, markdown=True),
            "",
        ]
    if report.profiles:
        lines += [
            "## Where the service's time goes (py-spy)",
            "",
            "Own: samples where the function itself was running (native code it called, "
            "such as TensorFlow kernels or libjpeg, counts as its own). Total: samples where "
            "it was anywhere on the stack; a chain of callers seen on exactly the same "
            "stacks is shown once, by its innermost function.",
            "",
            *profile_blocks(report, markdown=True),
        ]
    lines += [
        "## Memory and CPU (whole run of each server)",
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
        *(
            f"- {name}: " + ", ".join(f"{k} {v}" for k, v in info.items())
            for name, info in report.peers.items()
        ),
        "",
        "## How to reproduce",
        "",
        "```bash",
        report.command,
        "```",
        "",
        "`make bench` runs the same (`BENCH_ARGS` adds options: `--workers 1,2`, "
        '`--server-args "..."`, `--peers mosec`, `--skip naive,open-loop`, `--duration 3`; '
        "`make bench-mobilenet` for the model-bound profile). Install wrk first "
        "(`apt-get install wrk`); the peers' venvs are created under `bench/.peers/` on first "
        "use.",
    ]
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"


def write_markdown(report: BenchReport, path: Path, results_file: str) -> None:
    """Rewrite ``path`` with :func:`render_markdown`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_markdown(report, results_file), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--markdown``, write) the report of a results file again."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", type=Path, help="bench/results/<UTC time>.json")
    parser.add_argument("--markdown", type=Path, help="rewrite this file (e.g. BENCHMARKS.md)")
    args = parser.parse_args(argv)
    result = BenchReport.from_json(json.loads(args.results.read_text(encoding="utf-8")))
    print(format_text(result))
    if args.markdown is not None:
        write_markdown(result, args.markdown, str(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
