"""The benchmark harness measures what it says, at tiny scale and in seconds.

This checks that the harness works, not how fast anything is: a benchmark is not a test.
The load generators run against a local server in a background thread; wrk's own test is
skipped where wrk is not installed, and the fallback to the Python generator is checked
everywhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import msgpack
import pytest

from bench import acceptance, closedloop, inputs, machine, openloop, profiling, report, run, wrk
from bench.bodies import encode_msgpack, encode_multipart, encode_v2_json
from bench.config import parse_config
from bench.metrics import HistogramTotals, mean_between, read_batch_sizes
from bench.results import BenchReport, LevelResult
from bench.targets import MULTIPART
from tests.support.bench_server import local_server

ROOT = Path(__file__).resolve().parents[2]

_EXPOSITION = """\
# HELP mmserve_batch_size Items per model call.
# TYPE mmserve_batch_size histogram
mmserve_batch_size_bucket{le="1.0"} 2.0
mmserve_batch_size_bucket{le="+Inf"} 3.0
mmserve_batch_size_count 3.0
mmserve_batch_size_sum 7.0
"""

needs_wrk = pytest.mark.skipif(wrk.executable() is None, reason="wrk is not installed")


@pytest.fixture(scope="module")
def samples() -> list[inputs.Sample]:
    return inputs.generate(4, 32)


@pytest.fixture
def bodies(samples: list[inputs.Sample], tmp_path: Path) -> closedloop.BodySet:
    return closedloop.body_set(MULTIPART, [encode_multipart(s) for s in samples], tmp_path)


def _read(status: int, body: str) -> HistogramTotals | None:
    transport = httpx.MockTransport(lambda _request: httpx.Response(status, text=body))

    async def read() -> HistogramTotals | None:
        async with httpx.AsyncClient(transport=transport) as client:
            return await read_batch_sizes(client, "http://127.0.0.1/metrics")

    return asyncio.run(read())


def test_batch_size_is_read_from_metrics_and_null_without_them() -> None:
    assert _read(200, _EXPOSITION) == HistogramTotals(total=7.0, count=3.0)
    assert _read(404, '{"error": {"code": "not_found"}}') is None
    assert _read(200, "<html>not prometheus</html>") is None
    assert mean_between(HistogramTotals(7.0, 3.0), HistogramTotals(27.0, 8.0)) == 4.0
    assert mean_between(HistogramTotals(7.0, 3.0), HistogramTotals(7.0, 3.0)) is None
    assert mean_between(None, None) is None


def test_steal_is_the_hosts_share_of_the_machines_cpu_time() -> None:
    earlier = machine.CpuTimes(total=1_000, steal=10)
    assert machine.CpuTimes(total=1_400, steal=30).steal_pct_since(earlier) == 5.0
    assert machine.CpuTimes(total=1_000, steal=10).steal_pct_since(earlier) is None
    now = machine.cpu_times()
    assert now is not None and 0 <= now.steal <= now.total


def test_wrk_result_line_is_parsed() -> None:
    line = (
        'WRK_RESULT {"requests":1000,"duration_us":2000000,"bytes":1,"non2xx":10,"connect":1,'
        '"read":2,"write":0,"status":10,"timeout":3,"latency_us":{"min":100,"mean":900.0,'
        '"max":9000,"stdev":5.0,"p50":800,"p90":1500,"p95":2000,"p99":4000,"p999":8000}}'
    )
    result = wrk.parse(f"Running 2s test\n{line}\nRequests/sec: 500\n")
    assert result.ok == 990 and result.errors == 16
    assert result.error_kinds() == {"non-2xx": 10, "connect": 1, "read": 2, "timeout": 3}
    assert (result.duration_s, result.p50_ms, result.p99_ms) == (2.0, 0.8, 4.0)
    with pytest.raises(wrk.WrkFailed):
        wrk.parse("no result here")


@needs_wrk
def test_wrk_counts_answers_errors_and_latency_on_a_real_run(
    bodies: closedloop.BodySet,
) -> None:
    with local_server() as server:
        ok = wrk.run(
            server.url("/ok"), bodies.list_file, bodies.content_type, connections=4, duration_s=1
        )
        missing = wrk.run(
            server.url("/missing"),
            bodies.list_file,
            bodies.content_type,
            connections=2,
            duration_s=1,
        )
    assert ok.requests > 0 and ok.errors == 0 and ok.ok == ok.requests
    assert 0 < ok.p50_ms <= ok.p99_ms <= ok.max_ms
    assert server.answered["/ok"] >= ok.requests
    assert missing.requests > 0 and missing.non2xx == missing.requests and missing.ok == 0


def test_without_wrk_the_python_generator_measures_and_says_so(
    bodies: closedloop.BodySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_WRK", "")
    generator, message = closedloop.choose(False, timeout_s=10.0)
    assert generator.name == "python"
    assert "FALLING BACK" in message and "wrk is not installed" in message
    with local_server() as server:
        stats = generator.measure(server.url("/ok"), bodies, 2, 0.5)
    assert stats.ok > 0 and stats.errors == 0 and stats.rps > 0
    assert stats.p50_ms is not None and stats.p99_ms is not None
    assert 0 < stats.p50_ms <= stats.p99_ms


def _python(generator: str) -> bool:
    """``openloop.measure``'s ``python`` for a generator; skips C without a compiler."""
    if generator == "c" and openloop.compiled_client() is None:
        pytest.skip("no C compiler")
    return generator == "python"


@pytest.mark.parametrize("generator", ["c", "python"])
def test_open_loop_sends_on_schedule(samples: list[inputs.Sample], generator: str) -> None:
    payloads = [encode_multipart(s) for s in samples]
    with local_server() as server:
        result = openloop.measure(
            server.url("/ok"), payloads, rate=200, duration_s=1.0, python=_python(generator)
        )
    assert result.generator == generator
    assert result.scheduled == result.sent == 200
    assert result.ok == 200 and result.errors == 0
    assert server.answered["/ok"] == 200
    assert 180 <= result.achieved_rps <= 220
    assert result.send_lag_p50_ms is not None and result.send_lag_p50_ms < 50


@pytest.mark.parametrize("generator", ["c", "python"])
def test_open_loop_latency_runs_from_the_scheduled_time(
    samples: list[inputs.Sample], generator: str
) -> None:
    # 20 requests due every 25 ms on one connection, to a server that answers one per 50 ms:
    # request i is due at 25i ms and answered at 50(i+1) ms, so its latency is 50 + 25i ms.
    # Timed from the actual send (coordinated omission) each would read ~50 ms.
    payloads = [encode_multipart(s) for s in samples]
    with local_server(slow_s=0.05) as server:
        result = openloop.measure(
            server.url("/slow"),
            payloads,
            rate=40,
            duration_s=0.5,
            max_connections=1,
            python=_python(generator),
        )
    assert result.ok == 20 and result.errors == 0
    assert result.waited_for_connection > 0 and not result.kept_up
    assert result.p50_ms is not None and result.max_ms is not None
    assert result.p50_ms > 150 and result.max_ms > 400


@pytest.mark.parametrize("generator", ["c", "python"])
def test_open_loop_counts_refusals_and_reads_chunked_answers(
    samples: list[inputs.Sample], generator: str
) -> None:
    # Every /refuse answer is a 503 that closes its connection: each request then needs a
    # new one, and each is counted by its status, none as a connection failure.
    payloads = [encode_multipart(s) for s in samples]
    with local_server() as server:
        refused = openloop.measure(
            server.url("/refuse"), payloads, rate=100, duration_s=0.3, python=_python(generator)
        )
        chunked = openloop.measure(
            server.url("/chunked"), payloads, rate=100, duration_s=0.3, python=_python(generator)
        )
    assert refused.sent == refused.scheduled == 30 and server.answered["/refuse"] == 30
    assert refused.ok == 0 and refused.error_kinds == {"HTTP 503": 30}
    assert chunked.ok == chunked.scheduled == 30 and chunked.errors == 0
    assert server.answered["/chunked"] == 30
    assert chunked.p99_ms is not None and chunked.p99_ms < 1000


def test_every_wire_format_carries_the_same_image_and_text(
    samples: list[inputs.Sample],
) -> None:
    sample = samples[0]
    packed = msgpack.unpackb(encode_msgpack(sample).body, raw=False)
    assert packed == {"image": sample.image, "text": sample.text}
    request = json.loads(encode_v2_json(sample).body)
    image, text = request["inputs"]
    assert base64.b64decode(image["data"][0]) == sample.image and image["datatype"] == "BYTES"
    assert text["data"] == [sample.text]
    multipart = encode_multipart(sample)
    assert sample.image in multipart.body and sample.text.encode() in multipart.body


def test_profile_reduces_to_own_and_total_shares() -> None:
    raw = "\n".join(
        [
            "main (app.py:1);loop (app.py:5);decode (img.py:10) 6",
            "main (app.py:1);loop (app.py:5);decode (img.py:12) 2",
            'process 7:"python -c from x import y; y()";main (app.py:1);loop (app.py:5);'
            "respond (http.py:3) 2",
        ]
    )
    profile = profiling.reduce(raw)
    assert profile.samples == 10
    own = {s.function: s.own_pct for s in profile.top_own}
    assert own == {"decode (img.py)": 80.0, "respond (http.py)": 20.0}
    # main and loop sit on exactly the same stacks: shown once, by the innermost (loop).
    total = {s.function: s.total_pct for s in profile.top_total}
    assert total == {"loop (app.py)": 100.0, "decode (img.py)": 80.0, "respond (http.py)": 20.0}


def test_worker_counts_and_server_options_reach_mmserve_serve(tmp_path: Path) -> None:
    argv = ["--workers", "1,2", "--server-args", "--log-level info", "--peers", ""]
    config = parse_config([*argv, "--skip", "naive,floor"])
    plan, peers = run.plan_targets(config, tmp_path, [])
    assert peers == [] and [t.name for t in plan] == ["service w1", "service w2"]
    for target, workers in zip(plan, ("1", "2"), strict=True):
        command = target.command(8123, tmp_path)
        assert "serve" in command
        assert command[-4:] == ["--log-level", "info", "--workers", workers]
    assert [t.name for t in run.plan_targets(parse_config(["--peers", ""]), tmp_path, [])[0]] == [
        "service",
        "floor",
        "naive",
    ]


@pytest.mark.slow
def test_quick_benchmark_measures_every_row(trained_store: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "bench.run",
        "--quick",
        "--model-store",
        str(trained_store),
        "--model-name",
        "tiny",
        "--no-markdown",
        "--results-dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())

    assert result["generator"] == ("wrk" if shutil.which("wrk") else "python")
    levels = result["config"]["concurrency"]
    assert levels == [1, 4]
    for target in ("service", "floor", "naive"):
        rows = {r["concurrency"]: r for r in result["rows"] if r["target"] == target}
        assert sorted(rows) == levels
        for row in rows.values():
            assert row["errors"] == 0, row
            assert row["rps"] > 0 and row["requests"] > 0
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
            assert 0.0 <= row["steal_pct"] <= 100.0  # /proc/stat: a Linux machine
    assert [o["share_of_peak"] for o in result["open_loop"]] == [0.5, 0.8]
    for o in result["open_loop"]:
        assert o["target"] == "service" and o["result"]["ok"] > 0
        # What the server did meanwhile: its batches (from /metrics) and CPU per answer.
        assert o["mean_batch_size"] >= 1.0 and o["cpu_ms_per_request"] > 0
        assert 0.0 <= o["steal_pct"] <= 100.0
    # A profile, or a note saying why there is none (py-spy missing or not allowed to attach).
    if result["profiles"]:
        assert result["profiles"][0]["profile"]["samples"] > 0
    else:
        assert any(n.startswith("no profile") for n in result["notes"]), result["notes"]
    inprocess = result["inprocess"]
    assert inprocess["single_p50_ms"] > 0 and inprocess["single_rps"] > 0
    assert inprocess["batch_items_per_s"] > 0 and inprocess["batch_size"] == 32
    assert result["memory"]["service"]["end_mib"] > 0
    assert result["model"] == {**result["model"], "name": "tiny", "version": 1}
    assert "service" in done.stdout and "in-process" in done.stdout and "floor" in done.stdout
    # The results file alone is enough to print the report again.
    assert "capacity targets:" in report.format_text(BenchReport.from_json(result))


def _level(target: str, concurrency: int, rps: float, p50: float, p99: float) -> LevelResult:
    return LevelResult(target, concurrency, int(rps), 0, {}, 1.0, rps, p50, p50, p99, None, None)


def test_capacity_targets_are_read_as_ratios_within_the_run() -> None:
    rows = [
        _level("service", 1, 300, 4, 6),
        _level("service", 32, 900, 30, 120),
        _level("service", 64, 950, 60, 150),
        _level("mosec", 1, 60, 17, 20),
        _level("mosec", 32, 1000, 25, 50),
        _level("mosec", 64, 900, 50, 60),
    ]
    report = BenchReport(
        **dict.fromkeys(("timestamp", "command", "generator"), ""),
        **{key: {} for key in ("model", "inputs", "config", "machine", "memory")},
        targets={"service": "service", "mosec": "peer"},
        rows=rows,
        inprocess=None,  # type: ignore[arg-type]
        ratios=None,  # type: ignore[arg-type]
    )
    found = {c.target: c.met for c in acceptance.checks(report, "service")}
    assert found == {
        "c=32: >= 1x mosec's throughput": False,
        "c=64: >= 1x mosec's throughput": True,
        "c=1: >= 1.3x mosec's throughput": True,
        "c=32: p99 <= 3x p50": False,
        "c=64: p99 <= 3x p50": True,
        "throughput at c=64 >= at c=32": True,
        "0 errors at every level": True,
    }
