"""Server subprocesses: start on a free port, wait (bounded) for readiness, always stop."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 30.0


class ServerFailed(RuntimeError):
    """A server exited or never became ready; the message ends with its log."""


@dataclass(frozen=True)
class ServerProcess:
    """A started server and where to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_file: Path

    def rss_bytes(self) -> int:
        """Resident memory of the server and any processes it started."""
        try:
            proc = psutil.Process(self.process.pid)
            procs = [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.NoSuchProcess as exc:
            raise ServerFailed(f"{self.name} is gone:\n{log_tail(self.log_file)}") from exc

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server and its live subprocesses."""
        try:
            proc = psutil.Process(self.process.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess as exc:
            raise ServerFailed(f"{self.name} is gone:\n{log_tail(self.log_file)}") from exc
        total = 0.0
        for p in procs:
            try:
                times = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def wait_idle(self, max_s: float, busy_share: float = 0.1, step_s: float = 0.25) -> float:
        """Wait (at most ``max_s``) until the server uses under ``busy_share`` of one core
        over ``step_s``: requests a finished phase left in flight (its connections
        closed, the work still queued) must not be charged to the next phase. Returns
        the seconds waited."""
        start = time.monotonic()
        before = self.cpu_seconds()
        while time.monotonic() - start < max_s:
            time.sleep(step_s)
            now = self.cpu_seconds()
            if now - before < busy_share * step_s:
                break
            before = now
        return time.monotonic() - start

    def check_alive(self) -> None:
        """Raise :class:`ServerFailed` when the process has exited."""
        if self.process.poll() is not None:
            raise ServerFailed(
                f"{self.name} exited with {self.process.returncode}:\n{log_tail(self.log_file)}"
            )


def free_port() -> int:
    """A port nothing listens on right now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_command(
    port: int,
    model_store: Path,
    model_name: str,
    extra_args: Sequence[str] = (),
    workers: int | None = None,
) -> list[str]:
    """``mmserve serve`` from the running interpreter's environment, with ``extra_args``
    appended and ``--workers N`` when ``workers`` is given."""
    mmserve = Path(sys.executable).parent / "mmserve"
    launcher = [str(mmserve)] if mmserve.exists() else [sys.executable, "-m", "service.main"]
    return [
        *launcher,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-store",
        str(model_store),
        "--model-name",
        model_name,
        *extra_args,
        *(["--workers", str(workers)] if workers is not None else []),
    ]


def uvicorn_command(port: int, app: str) -> list[str]:
    """uvicorn serving ``app`` (``bench.naive_server:app``, ``bench.floor_server:app``)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment (MMSERVE_* settings pass through) plus ``extra``."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


@contextmanager
def running(
    name: str,
    command: list[str],
    port: int,
    ready_path: str,
    log_file: Path,
    *,
    env: Mapping[str, str],
    timeout_s: float,
) -> Iterator[ServerProcess]:
    """Start ``command``, wait until ``ready_path`` answers 200, and stop it on exit."""
    with log_file.open("wb") as log:
        try:
            process = subprocess.Popen(
                command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT
            )
        except OSError as exc:  # a missing program, or a script whose interpreter moved
            raise ServerFailed(f"{name} cannot start {command[0]}: {exc}") from exc
        server = ServerProcess(name, process, f"http://127.0.0.1:{port}", log_file)
        try:
            wait_ready(server, ready_path, timeout_s)
            yield server
        finally:
            stop(process)


def wait_ready(server: ServerProcess, path: str, timeout_s: float) -> None:
    """Poll ``path`` until it answers 200; raise :class:`ServerFailed` on exit or timeout."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            server.check_alive()
            try:
                if client.get(server.base_url + path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise ServerFailed(
        f"{server.name} not ready within {timeout_s:.0f} s:\n{log_tail(server.log_file)}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (servers shut down gracefully), then SIGKILL if it hangs; then the same for
    any of its subprocesses still running (worker processes that outlived their parent)."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    alive = [c for c in children if c.is_running()]
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _gone, still = psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S / 3)
    for child in still:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def log_tail(log_file: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a server log."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
