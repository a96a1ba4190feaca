"""The capture benchmark pairs its phases by round and reads what each phase wrote; a short
real run (two servers, one round) checks the whole of it where wrk is installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import wrk
from bench.capture import Phase, round_ratios
from bench.metrics import sample_sums

ROOT = Path(__file__).resolve().parents[2]

_COUNTERS = """\
# HELP mmserve_capture_dropped_total Sampled pairs not captured.
# TYPE mmserve_capture_dropped_total counter
mmserve_capture_dropped_total{reason="queue_full"} 3.0
mmserve_capture_dropped_created{reason="queue_full"} 1.7e9
mmserve_capture_dropped_total{reason="budget"} 2.0
# HELP mmserve_capture_written_total Captured pairs written.
# TYPE mmserve_capture_written_total counter
mmserve_capture_written_total 40.0
"""


def _phase(round_: int, capture: str, rps: float, p99: float) -> Phase:
    return Phase(round_, capture, rps, p99 / 2, p99, 0, 0.0, 0.0, 0, 0)


def test_a_counter_is_summed_over_its_labels_and_zero_when_absent() -> None:
    sums = sample_sums(_COUNTERS)  # read as the bench reads them (absent: 0)
    assert sums.get("mmserve_capture_dropped_total", 0.0) == 5.0
    assert sums.get("mmserve_capture_written_total", 0.0) == 40.0
    assert sums.get("mmserve_capture_bytes", 0.0) == 0.0


def test_each_round_is_one_ratio_whatever_the_order_of_its_phases() -> None:
    phases = [
        _phase(0, "off", 1000.0, 30.0),
        _phase(0, "rate 1", 900.0, 33.0),
        _phase(1, "rate 1", 800.0, 36.0),  # a slower round: its own off phase is slower too
        _phase(1, "off", 1000.0, 30.0),
        _phase(2, "off", 1000.0, 40.0),
        _phase(2, "rate 1", 950.0, 40.0),
        _phase(3, "off", 5000.0, 1.0),  # its captured phase never ran: not a pair
    ]
    throughput = round_ratios(phases, "requests_per_s")
    assert (throughput.median, throughput.low, throughput.high) == pytest.approx((0.9, 0.8, 0.95))
    p99 = round_ratios(phases, "p99_ms")
    assert (p99.median, p99.low, p99.high) == pytest.approx((1.1, 1.0, 1.2))
    assert str(p99) == "x1.100 (rounds: x1.000 to x1.200)"
    with pytest.raises(ValueError, match="no round"):
        round_ratios(phases[-1:], "p99_ms")


@pytest.mark.slow
@pytest.mark.skipif(wrk.executable() is None, reason="wrk is not installed")
def test_one_round_loads_both_servers_and_keeps_the_budget(
    trained_store: Path, tmp_path: Path
) -> None:
    results = tmp_path / "capture.json"
    command = [
        sys.executable,
        "-m",
        "bench.capture",
        "--model-store",
        str(trained_store),
        "--model-name",
        "tiny",
        "--workers",
        "1",
        "--rounds",
        "1",
        "--duration",
        "1",
        "--connections",
        "4",
        "--budget",
        str(2 * 1024**2),
        "--folder",
        str(tmp_path),
        "--json",
        str(results),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    off, on = json.loads(results.read_text())
    assert (off["round"], off["capture"], on["round"], on["capture"]) == (0, "off", 0, "rate 1")
    assert off["written"] == 0 and off["disk_bytes"] == 0
    assert on["written"] > 0 and on["dropped"] == 0
    assert 0 < on["disk_bytes"] <= 2 * 1024**2
    assert off["requests_per_s"] > 0 and on["requests_per_s"] > 0
    assert "capture at rate 1 against off, per round: req/s x" in done.stdout
    assert not list(tmp_path.glob("mmserve-capture-bench-*"))  # its folder is removed
