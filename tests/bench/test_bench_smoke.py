"""The benchmark harness runs end to end at tiny scale and reports sane figures.

This checks that the harness works, not how fast anything is: a benchmark is not a test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.metrics import HistogramTotals, mean_between, read_batch_sizes

ROOT = Path(__file__).resolve().parents[2]

_EXPOSITION = """\
# HELP mmserve_batch_size Items per model call.
# TYPE mmserve_batch_size histogram
mmserve_batch_size_bucket{le="1.0"} 2.0
mmserve_batch_size_bucket{le="+Inf"} 3.0
mmserve_batch_size_count 3.0
mmserve_batch_size_sum 7.0
"""


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


@pytest.mark.slow
def test_quick_benchmark_measures_both_servers_and_the_in_process_limit(
    trained_store: Path, tmp_path: Path
) -> None:
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
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())

    levels = result["config"]["concurrency"]
    assert levels == [1, 4]
    for target in ("service", "naive"):
        rows = {r["concurrency"]: r for r in result["rows"] if r["target"] == target}
        assert sorted(rows) == levels
        for row in rows.values():
            assert row["errors"] == 0, row
            assert row["rps"] > 0 and row["requests"] > 0
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    inprocess = result["inprocess"]
    assert inprocess["single_p50_ms"] > 0 and inprocess["single_rps"] > 0
    assert inprocess["batch_items_per_s"] > 0 and inprocess["batch_size"] == 32
    assert result["memory"]["service"]["end_mib"] > 0
    assert result["model"] == {**result["model"], "name": "tiny", "version": 1}
    assert "service" in done.stdout and "in-process" in done.stdout
