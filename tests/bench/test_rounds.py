"""bench.rounds: the spread over rounds is computed from rounds' pairs, and the harness
runs fresh servers round after round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import rounds
from bench.rounds import RoundRow, Spread

ROOT = Path(__file__).resolve().parents[2]


def _row(round_: int, target: str, level: int, rps: float) -> RoundRow:
    return RoundRow(round_, target, level, rps, 10.0, 20.0, 0)


ROWS = [
    _row(0, "service", 32, 1000.0),
    _row(0, "service", 64, 990.0),
    _row(0, "mosec", 32, 900.0),
    _row(0, "mosec", 64, 1000.0),
    _row(1, "mosec", 32, 800.0),
    _row(1, "mosec", 64, 1100.0),
    _row(1, "service", 32, 1040.0),
    _row(1, "service", 64, 1144.0),
    _row(2, "service", 32, 980.0),
    _row(2, "service", 64, 1000.0),
    # Round 3 lost mosec (it failed to start): no pair from that round.
    _row(3, "service", 32, 5000.0),
    _row(3, "service", 64, 5000.0),
    _row(2, "mosec", 32, 1000.0),
    _row(2, "mosec", 64, 1250.0),
]


def test_ratios_pair_the_two_servers_of_the_same_round() -> None:
    by_level = rounds.paired_ratios(ROWS, "service", "mosec")
    # Round by round: 32: 1000/900, 1040/800, 980/1000; 64: 990/1000, 1144/1100, 1000/1250.
    assert by_level[32] == Spread(1000 / 900, 0.98, 1.3, 2, 3)
    assert by_level[64] == Spread(0.99, 0.8, 1.04, 1, 3)
    # The other way round is the reciprocal, round by round.
    assert rounds.paired_ratios(ROWS, "mosec", "service")[64].median == pytest.approx(1 / 0.99)


def test_scaling_is_each_level_over_the_one_before_within_a_round() -> None:
    table = rounds.scaling(ROWS, "service")
    assert list(table) == [(32, 64)]
    # 990/1000, 1144/1040, 1000/980 and 5000/5000: the median of four is the mean of two.
    assert table[32, 64] == Spread((1.0 + 1000 / 980) / 2, 0.99, 1.1, 3, 4)


def test_throughput_spread_and_an_empty_figure() -> None:
    service = rounds.throughput(ROWS)["service"]
    assert service[32] == Spread(1020.0, 980.0, 5000.0, 4, 4)
    with pytest.raises(ValueError):
        Spread.of([])


def test_each_round_rotates_the_order() -> None:
    plan = ["a", "b", "c"]
    assert [rounds.rotation(plan, r) for r in range(4)] == [  # type: ignore[arg-type]
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_report_names_every_pair_once() -> None:
    text = rounds.markdown(ROWS, {"service": "service", "mosec": "peer"}, "header")
    assert "| service / mosec | 32 | 1.11x | 0.98x | 1.30x | 2 of 3 |" in text
    assert "| service / mosec | 64 | 0.99x | 0.80x | 1.04x | 1 of 3 |" in text
    assert "mosec / service" not in text
    assert "| service | 64 / 32 | 1.01x | 0.99x | 1.10x | 3 of 4 |" in text


def test_one_round_is_refused() -> None:
    with pytest.raises(SystemExit):
        rounds.parse(["--rounds", "1"])
    count, config = rounds.parse(["--rounds", "3", "--duration", "2"])
    assert count == 3 and config.concurrency == [32, 64] and config.peers == ["mosec"]
    assert config.duration_s == 2.0 and {"floor", "naive"} <= config.skip


@pytest.mark.slow
def test_rounds_start_fresh_servers_and_record_every_round(
    trained_store: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "bench.rounds",
        "--rounds",
        "2",
        "--concurrency",
        "1,4",
        "--duration",
        "1",
        "--warmup",
        "1",
        "--peers",
        "",
        "--workers",
        "1",
        "--model-store",
        str(trained_store),
        "--model-name",
        "tiny",
        "--results-dir",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    (result_file,) = tmp_path.glob("rounds-*.json")
    result = json.loads(result_file.read_text())
    assert result["rounds"] == 2 and result["targets"] == {"service w1": "service"}
    measured = {(r["round"], r["concurrency"]) for r in result["rows"]}
    assert measured == {(0, 1), (0, 4), (1, 1), (1, 4)}
    assert all(r["errors"] == 0 and r["rps"] > 0 for r in result["rows"])
    # Each round started its own server (the progress lines say so, one start per round).
    assert done.stderr.count("service w1: starting on port") == 2
    assert "| service w1 | 4 / 1 |" in done.stdout
