"""What the workers of one group share: the record of what they serve, merged when two
workers change it at once, and each worker's progress through the changes."""

from __future__ import annotations

from pathlib import Path

from service.serving.worker_state import READY, STARTING, Served, WorkerGroup


def group(index: int, states: list[int], applied: list[int], folder: Path) -> WorkerGroup:
    return WorkerGroup(index, states, applied, folder)


def test_changes_from_two_workers_merge(tmp_path: Path) -> None:
    states, applied = [READY, READY], [0, 0]
    first, second = group(0, states, applied, tmp_path), group(1, states, applied, tmp_path)
    assert first.served() == Served(0, None)  # no change yet: the settings decide
    assert first.record(["pairs"], "shapes", None) == 1
    # The second worker has not followed yet (it serves pairs only): its change still keeps
    # the first one's.
    assert second.record(["pairs"], None, "pairs") == 2
    assert second.served() == Served(2, ("shapes",))
    assert second.record(["pairs"]) == 3  # a label change: the models stay
    assert first.served() == Served(3, ("shapes",))


def test_progress_counts_ready_workers_and_failures(tmp_path: Path) -> None:
    states, applied = [READY, READY, STARTING], [0, 0, 0]
    workers = [group(i, states, applied, tmp_path) for i in range(3)]
    assert all(w.shares_models for w in workers)
    generation = workers[0].record(["pairs"], "shapes")
    workers[0].mark_applied(generation)
    # A starting worker reads the record as it starts: only ready ones are waited for.
    assert workers[0].behind(generation) == [1]
    workers[1].mark_applied(generation, ok=False)
    assert workers[0].behind(generation) == []
    assert workers[0].failed(generation) == [1]
    # A later change that worker 1 applies clears its failure.
    later = workers[1].record(["pairs", "shapes"])
    workers[1].mark_applied(later)
    assert workers[1].failed(later) == [] and workers[1].behind(later) == [0]


def test_one_worker_or_no_folder_shares_nothing(tmp_path: Path) -> None:
    assert not WorkerGroup(0, [READY], [0], tmp_path).shares_models
    assert not WorkerGroup(0, [READY, READY]).shares_models
    assert WorkerGroup(0, [READY, READY]).served() == Served(0, None)
