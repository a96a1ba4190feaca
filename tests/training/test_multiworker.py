"""Several machines: two local worker processes under MultiWorkerMirroredStrategy (TF_CONFIG
on loopback ports) train exactly as one process with the same global batch, only the chief
publishes, and what it publishes passes the service's start-up golden check. Also the
pure parts: who is chief, and TF_CONFIG from a Kubernetes Indexed Job's index."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service import model_store
from service.training.cli import main as train_main
from service.training.cluster import (
    Role,
    role_in,
    tf_config_for_index,
    tf_config_from_index,
)
from tests.support.training import serve_check

ROOT = Path(__file__).parents[2]
RUNNER = "tests.training.multiworker_run"
TIMEOUT_S = 300  # all three processes together; the run takes about 45 s on 2 busy cores


# ------------------------------------------------------------------------- the roles


def test_worker_0_is_chief_when_the_cluster_has_no_chief() -> None:
    cluster = {"worker": ["a:1", "b:1", "c:1"]}
    assert role_in(cluster, "worker", 0) == Role("worker", 0, 3, True)
    assert role_in(cluster, "worker", 2) == Role("worker", 2, 3, False)


def test_the_chief_task_is_chief_and_worker_0_is_not() -> None:
    cluster = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert role_in(cluster, "chief", 0) == Role("chief", 0, 3, True)
    assert not role_in(cluster, "worker", 0).chief


def test_without_a_cluster_the_process_is_alone_and_chief() -> None:
    alone = role_in({}, None, None)
    assert alone.chief and alone.workers == 1 and alone.describe() == "the only worker"


def test_an_evaluator_or_parameter_server_does_not_train() -> None:
    with pytest.raises(ValueError, match="does not train"):
        role_in({"worker": ["a:1"], "evaluator": ["e:1"]}, "evaluator", 0)


def test_tf_config_from_the_job_completion_index() -> None:
    address = "mmserve-train-{index}.mmserve-train:2222"
    config = json.loads(tf_config_from_index(3, address, {"JOB_COMPLETION_INDEX": "2"}))
    assert config == {
        "cluster": {
            "worker": [f"mmserve-train-{i}.mmserve-train:2222" for i in range(3)],
        },
        "task": {"type": "worker", "index": 2},
    }
    assert tf_config_for_index(1, address, 0)["task"] == {"type": "worker", "index": 0}


@pytest.mark.parametrize(
    ("workers", "address", "environ", "message"),
    [
        (2, "w-{index}:2222", {}, "JOB_COMPLETION_INDEX"),
        (2, "w-{index}:2222", {"JOB_COMPLETION_INDEX": "2"}, "not in 0..1"),
        (2, "w:2222", {"JOB_COMPLETION_INDEX": "0"}, "must contain"),
        (0, "w-{index}:2222", {"JOB_COMPLETION_INDEX": "0"}, ">= 1"),
        (2, "w-{index}:2222", {"JOB_COMPLETION_INDEX": "0", "TF_CONFIG": "{}"}, "already set"),
    ],
)
def test_a_wrong_index_or_address_is_refused(
    workers: int, address: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tf_config_from_index(workers, address, environ)


def test_the_cli_refuses_workers_without_multiworker(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--demo", "--workers", "2", "--worker-address", "w-{index}:2222"]
    assert train_main(argv) == 2
    assert "--distribute multiworker" in capsys.readouterr().err
    assert train_main([*argv[:3], "--distribute", "multiworker"]) == 2
    assert "go together" in capsys.readouterr().err


def test_the_cli_refuses_workers_without_an_index(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = ["--demo", "--distribute", "multiworker", "--workers", "2"]
    assert train_main([*argv, "--worker-address", "w-{index}:2222"]) == 2
    assert "JOB_COMPLETION_INDEX" in capsys.readouterr().err


def test_every_pipeline_shards_by_data_so_workers_split_the_global_batches(
    tmp_path: Path,
) -> None:
    """Each worker keeps its slice of every global batch (the one-process batches), in
    memory and streamed: sharding a stream by file would give other batches."""
    import numpy as np
    import tensorflow as tf

    from service.training import pipeline

    images, texts, labels = np.zeros((4, 32, 32, 3), np.uint8), np.array(["a"] * 4), np.zeros(4)
    shards = [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"]
    for ds in (
        pipeline.from_memory(images, texts, labels, 2, 2, shuffle_seed=1),
        pipeline.from_shards(shards, (32, 32), 2, 2, shuffle_seed=1),
        pipeline.from_shards(shards, (32, 32), 2, 2, with_targets=False),
    ):
        policy = ds.options().experimental_distribute.auto_shard_policy
        assert policy == tf.data.experimental.AutoShardPolicy.DATA


# ------------------------------------------------------------------ two real workers


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now (the OS picks them; they are released before use)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def last_json(log: Path) -> dict[str, object]:
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    assert lines, log.read_text()[-3000:]
    out: dict[str, object] = json.loads(lines[-1])
    return out


@pytest.mark.slow
def test_two_workers_equal_one_process_and_only_the_chief_publishes(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    base.pop("TF_CONFIG", None)
    runs: dict[str, dict[str, str]] = {"alone": base}
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        (tmp_path / f"tmp{index}").mkdir()
        runs[f"worker{index}"] = {
            **base,
            "TF_CONFIG": json.dumps(tf_config),
            "TMPDIR": str(tmp_path / f"tmp{index}"),  # where a non-chief builds its copy
        }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    started = time.monotonic()
    try:
        for name, env in runs.items():
            mode = "none" if name == "alone" else "multiworker"
            store = tmp_path / f"store-{name}"
            with open(tmp_path / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", RUNNER, mode, str(tiny_manifest), str(store)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,  # its own process group, killed below
                )
        for name, process in processes.items():
            left = TIMEOUT_S - (time.monotonic() - started)
            code = process.wait(timeout=max(left, 1))
            assert code == 0, (
                f"{name}: exit {code}\n" + (tmp_path / f"{name}.log").read_text()[-4000:]
            )
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    elapsed = time.monotonic() - started
    out = {name: last_json(tmp_path / f"{name}.log") for name in runs}
    alone, chief, other = out["alone"]["loss"], out["worker0"]["loss"], out["worker1"]["loss"]
    assert isinstance(alone, list) and isinstance(chief, list) and isinstance(other, list)
    assert len(alone) == len(chief) == 2
    worst = max(abs(a - b) for a, b in zip(alone, chief, strict=True))
    print(f"\ntwo workers vs one process: loss differs by {worst:.1e} at most ({elapsed:.0f} s)")
    assert worst < 1e-5, out
    assert other == chief  # every worker logs the same global loss

    # Only the chief published; the other wrote nothing to its store and left no copy.
    chief_store, other_store = tmp_path / "store-worker0", tmp_path / "store-worker1"
    assert model_store.list_versions(chief_store, "mw") == [1]
    assert not other_store.exists()
    assert not [p for p in (tmp_path / "tmp1").iterdir() if p.name.startswith("mmserve-")]
    other_log = (tmp_path / "worker1.log").read_text()
    assert "worker 1 of 2 workers published nothing" in other_log
    assert "published mw version 1 at" not in other_log
    assert "published mw version 1 at" in (tmp_path / "worker0.log").read_text()
    assert out["worker1"]["version"] == 1  # the chief's version, agreed on by every worker

    version = model_store.resolve(chief_store, "mw")
    meta = model_store.load_metadata(version.path)
    assert meta.training["distribute"] == "multiworker" and meta.training["workers"] == 2
    assert serve_check(version) <= 1e-4  # the server's start-up load and golden check
