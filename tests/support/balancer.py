"""Real `mmserve serve` replicas behind a real HAProxy on loopback, and load through it.

The HAProxy configuration is the committed ``deploy/haproxy.cfg`` with only its addresses
substituted (Docker's DNS and the `replica` service name become loopback ports); every
other line, the health checks and retries included, runs as committed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.deploy_checks import HAPROXY_CONFIG, HAPROXY_HINT, ROOT, require

START_TIMEOUT_S = 120.0
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what}")
        time.sleep(POLL_S)


def golden_pair(store: Path, name: str) -> tuple[bytes, str]:
    """An image and its text from the latest version's golden examples."""
    version = max(int(p.name) for p in (store / name).iterdir() if p.name.isdigit())
    golden = store / name / str(version) / "golden"
    examples = json.loads((golden / "golden.json").read_text())["examples"]
    example = next(e for e in examples if e["image"] and e["text"])
    return (golden / example["image"]).read_bytes(), str(example["text"])


# ------------------------------------------------------------------------------ processes


def substitute(text: str, pattern: str, replacement: str) -> str:
    """Replace the one match of ``pattern`` (multiline); ValueError if it is not exactly one,
    so a change to the committed configuration cannot be silently skipped."""
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise ValueError(f"{pattern!r} matched {count} times in the HAProxy configuration")
    return new


def loopback_config(text: str, listen_port: int, replica_ports: list[int]) -> str:
    """The committed configuration with loopback addresses instead of Docker's."""
    text = substitute(text, r"^(\s*bind )\S+$", rf"\g<1>127.0.0.1:{listen_port}")
    text = substitute(text, r"^resolvers docker\n(?:[ \t]+\S.*\n)+", "")
    servers = "\n".join(
        f"    server replica-{i} 127.0.0.1:{port}" for i, port in enumerate(replica_ports, 1)
    )
    return substitute(text, r"^\s*server-template .*$", servers)


@dataclass
class Process:
    """A child process with its log file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Process(popen, log)


def stop(process: Process) -> None:
    if process.popen.poll() is None:
        process.popen.kill()
    process.popen.wait(timeout=30)


@dataclass
class Replica:
    """One `mmserve serve` process (the container's command) on a loopback port."""

    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.process.popen.poll() is not None:
            raise RuntimeError(f"replica exited {self.process.popen.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.process.text()

    def predictions_served(self) -> float:
        """Successful ``POST /v1/predict`` answers so far, from the replica's own /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "mmserve_http_requests"
            for sample in family.samples
            if sample.name == "mmserve_http_requests_total"
            and sample.labels.get("route") == "/v1/predict"
            and sample.labels.get("status") == "200"
        )


def replica_env(store: Path, model_name: str, environment: dict[str, str]) -> dict[str, str]:
    """This process's environment without MMSERVE_*, then ``environment`` (the compose
    service's), then the test's model store; one worker process per replica (two replicas
    already share the test machine's two cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSERVE_")}
    env.update(environment)
    env.update(
        MMSERVE_MODEL_STORE=str(store),
        MMSERVE_MODEL_NAME=model_name,
        MMSERVE_WORKERS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


@contextmanager
def replicas_behind_haproxy(
    store: Path, model_name: str, environment: dict[str, str], count: int, workdir: Path
) -> Iterator[tuple[str, list[Replica], Process]]:
    """``count`` ready replicas and HAProxy in front of them: (balancer URL, replicas,
    HAProxy). Everything still running is killed on exit."""
    haproxy = require("haproxy", HAPROXY_HINT)
    with ExitStack() as cleanup:
        replicas = []
        for i in range(count):
            port = free_port()
            argv = [str(Path(sys.executable).parent / "mmserve"), "serve"]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            env = replica_env(store, model_name, environment)
            process = spawn(argv, workdir / f"replica-{i + 1}.log", env)
            cleanup.callback(stop, process)
            replicas.append(Replica(port, process))
        for replica in replicas:
            wait_for(replica.ready, f"replica on {replica.port} ready", START_TIMEOUT_S)
        listen = free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(
            loopback_config(HAPROXY_CONFIG.read_text(), listen, [r.port for r in replicas])
        )
        balancer = spawn([haproxy, "-db", "-f", str(config)], workdir / "haproxy.log")
        cleanup.callback(stop, balancer)
        url = f"http://127.0.0.1:{listen}"

        def balancer_ready() -> bool:
            if balancer.popen.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{balancer.text()}")
            try:
                return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(balancer_ready, "HAProxy answering", 30)
        yield url, replicas, balancer


def terminate_and_time(replica: Replica, timeout: float) -> tuple[int, float]:
    """SIGTERM, then wait: (exit status, seconds from the signal to the exit)."""
    sent = time.monotonic()
    replica.process.popen.send_signal(signal.SIGTERM)
    status = replica.process.popen.wait(timeout=timeout)
    return status, time.monotonic() - sent


# ---------------------------------------------------------------------------------- load


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None
    error: str | None = None


@dataclass
class Load:
    """Closed-loop predictions through ``url`` from ``clients`` threads, each with its own
    keep-alive connection, until stopped."""

    url: str
    image: bytes
    text: str
    clients: int = 8
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self) -> None:
        files = {"image": ("golden.png", self.image)}
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/v1/predict", files=files, data={"text": self.text})
                    outcome = Outcome(started, time.monotonic(), response.status_code)
                    if response.status_code != 200:
                        outcome.error = response.text[:200]
                except httpx.TransportError as exc:
                    outcome = Outcome(started, time.monotonic(), None, f"{type(exc).__name__}")
                with self._lock:
                    self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status != 200]


def redispatched(haproxy_log: str) -> int:
    """Requests HAProxy retried on another server (its httplog marks the retry count with
    a leading +)."""
    return len(re.findall(r" \d+/\d+/\d+/\d+/\+\d+ ", haproxy_log))
