"""Real servers for end-to-end tests: ``mmserve serve`` or uvicorn as a process on a free
loopback port, waited for (bounded) and always stopped; plus the trained tiny model's files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def version_dir(store: Path) -> Path:
    return store / "tiny" / "1"


def golden_examples(store: Path) -> list[dict[str, Any]]:
    index = version_dir(store) / "golden" / "golden.json"
    examples: list[dict[str, Any]] = json.loads(index.read_text())["examples"]
    return examples


def golden_with_image_and_text(store: Path) -> tuple[Path, str]:
    example = next(e for e in golden_examples(store) if e["image"] and e["text"])
    return version_dir(store) / "golden" / example["image"], example["text"]


def post_predict(url: str, file: Path, text: str) -> httpx.Response:
    """``POST /v1/predict`` with one image file and its text, as multipart."""
    return httpx.post(
        f"{url}/v1/predict",
        files={"image": (file.name, file.read_bytes())},
        data={"text": text},
        timeout=30,
    )


def by_label(body: dict[str, Any]) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in body["predictions"]}


def copy_store(store: Path, tmp_path: Path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(store, target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]


def cli_server_command(port: int) -> list[str]:
    """The container's command (`mmserve serve`), listening where the test can reach it."""
    return [
        str(Path(sys.executable).parent / "mmserve"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def server_env(store: Path) -> dict[str, str]:
    """One worker process (tests/e2e/test_workers.py covers several)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSERVE_")}
    env.update(
        MMSERVE_MODEL_STORE=str(store),
        MMSERVE_MODEL_NAME="tiny",
        MMSERVE_WORKERS="1",
        # This checkout's code, whichever checkout the environment was installed from.
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def start_and_expect_exit(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        server_command(free_port()),
        cwd=ROOT,
        env=server_env(store),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


@contextmanager
def running_server(
    store: Path,
    tmp_path: Path,
    command: Callable[[int], list[str]] = server_command,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the server (``env``: settings on top of :func:`server_env`'s), wait (bounded)
    for readiness, and always stop it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command(port),
            cwd=ROOT,
            env={**server_env(store), **(env or {})},
            stdout=log,
            stderr=log,
        )
        try:
            wait_until_ready(url, process, log_file)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_file.read_text()}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not ready within {START_TIMEOUT_S}s:\n{log_file.read_text()}")


def counts_by_pid(metrics_dir: Path, sample: str, **labels: str) -> dict[int, float]:
    """The counter ``sample`` (with ``labels``) as each worker process counted it, from the
    workers' ``PROMETHEUS_MULTIPROC_DIR``."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    counts: dict[int, float] = {}
    for file in metrics_dir.glob("counter_*.db"):
        pid = int(file.stem.split("_")[1])
        alone = metrics_dir / f"pid-{pid}"
        alone.mkdir(exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        for family in registry.collect():
            for found in family.samples:
                if found.name == sample and all(
                    found.labels.get(k) == v for k, v in labels.items()
                ):
                    counts[pid] = counts.get(pid, 0) + found.value
    return counts
