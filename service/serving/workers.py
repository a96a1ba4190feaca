"""Several server processes on one port: ``mmserve serve --workers N``.

The supervisor (the process the user started) checks that the port is free, then starts
N worker processes, each listening on the port with ``SO_REUSEPORT`` once its model is
ready: the kernel spreads new connections evenly over them (one shared socket measured
badly unbalanced: the least busy worker takes most connections, and keeps them). Each
worker loads and verifies its own copy of the model and runs its own batcher, so N workers
use up to N cores' worth of Python.

    supervisor ── starts and watches the workers, no TensorFlow
      ├── worker 0 ── app + model + batcher
      └── worker 1 ── app + model + batcher

- Readiness: each worker records its state in a shared array; ``/health/ready`` answers
  200 from any worker only while every worker is ready.
- SIGTERM or SIGINT to the supervisor drains every worker (each exits 0 once its requests
  are answered); the supervisor then exits 0.
- SIGHUP to the supervisor, or a reload through the API in any worker, makes every worker
  check the store for a newer version at once.
- A load, unload or label change through the API in any worker reaches every worker
  (:mod:`service.serving.worker_sync`): the request is answered once all of them apply it,
  and a replacement worker starts with what the group serves then.
- A worker that dies after start-up is replaced; one that fails to start stops them all
  (the model failed its golden check, say), with the start-up failure status.
- Metrics: the workers write their samples to ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
  temporary folder unless that is set; its old samples are deleted at start), and any
  worker's ``/metrics`` adds up all of them.

Imported only when ``mmserve serve`` runs with more than one worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from service.errors import ConfigurationError
from service.serving.logging_setup import configure_logging
from service.serving.settings import Settings
from service.serving.worker_state import STARTING, WorkerGroup

log = logging.getLogger("mmserve.workers")

STARTUP_FAILURE = 3
"""Exit status when a worker failed to start (as for a single process)."""

_DRAIN_MARGIN_S = 15.0
"""How long past ``shutdown_timeout_s`` the supervisor waits for workers before killing."""


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    ever_ready: bool = False


def run_workers(settings: Settings) -> int:
    """Serve with ``settings.workers`` processes until SIGTERM/SIGINT; the exit status."""
    from prometheus_client import multiprocess

    from service.serving.metrics import MULTIPROC_DIR_ENV

    configure_logging(settings.log_level, settings.log_format)
    try:
        _check_port_free(settings)
    except ConfigurationError as exc:
        log.error("%s", exc)
        return STARTUP_FAILURE
    given_dir = os.environ.get(MULTIPROC_DIR_ENV)
    metrics_dir = given_dir or tempfile.mkdtemp(prefix="mmserve-metrics-")
    for stale in Path(metrics_dir).glob("*.db"):  # a previous run's samples
        stale.unlink()
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir  # inherited by the workers
    context = multiprocessing.get_context("spawn")
    states = context.RawArray("b", settings.workers)
    applied = context.RawArray("q", settings.workers)
    # What the group serves once it is changed through the API; this run's alone.
    group_dir = Path(tempfile.mkdtemp(prefix="mmserve-group-"))
    worker_settings = _per_worker(settings)
    stop: list[int] = []

    def on_stop(sig: int, frame: FrameType | None) -> None:
        stop.append(sig)
        for worker in workers:  # at once: readiness must turn 503 now, not at the next poll
            _signal(worker.process, signal.SIGTERM)

    def on_reload(sig: int, frame: FrameType | None) -> None:
        for worker in workers:
            _signal(worker.process, signal.SIGHUP)

    def start(index: int) -> _Worker:
        states[index] = STARTING
        applied[index] = 0
        process = context.Process(
            target=_worker_main,
            args=(worker_settings, WorkerGroup(index, states, applied, group_dir)),
            name=f"mmserve-worker-{index}",
        )
        process.start()
        log.info("started worker %d (pid %s)", index, process.pid)
        return _Worker(index, process)

    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGTERM, signal.SIGINT)} | {
        signal.SIGHUP: signal.signal(signal.SIGHUP, on_reload)
    }
    workers: list[_Worker] = []
    try:
        workers = [start(i) for i in range(settings.workers)]
        log.info("supervising %d workers on %s:%d", settings.workers, settings.host, settings.port)
        status = _supervise(workers, states, stop, start, multiprocess.mark_process_dead)
        if not stop:  # a start-up failure; after a stop signal on_stop has told them already
            for worker in workers:
                _signal(worker.process, signal.SIGTERM)
        return _stop_all(workers, settings.shutdown_timeout_s + _DRAIN_MARGIN_S, status)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(group_dir, ignore_errors=True)
        if not given_dir:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(
    workers: list[_Worker],
    states: Any,
    stop: list[int],
    start: Callable[[int], _Worker],
    mark_dead: Callable[[int], None],
) -> int:
    """Watch the workers until a stop signal (0) or a start-up failure (its status)."""
    group = WorkerGroup(0, states)
    while not stop:
        for worker in workers:
            worker.ever_ready = worker.ever_ready or group.is_ready(worker.index)
        wait([w.process.sentinel for w in workers], timeout=0.5)
        for i, worker in enumerate(workers):
            code = worker.process.exitcode
            if code is None or stop:
                continue
            mark_dead(worker.process.pid or 0)
            if not worker.ever_ready:
                log.error("worker %d exited with status %d during start-up", worker.index, code)
                return STARTUP_FAILURE
            log.error(
                "worker %d (pid %s) died with status %d; replacing it", i, worker.process.pid, code
            )
            time.sleep(1.0)  # no tight loop should a worker die again at once
            workers[i] = start(worker.index)
    return 0


def _stop_all(workers: list[_Worker], timeout: float, status: int) -> int:
    """Wait for the signalled workers to drain, kill what is left; the exit status.

    Each worker gets SIGTERM once: a second one, arriving after its server restored the
    default handler on the way out, would kill it with status -15."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.process.exitcode is None:
            log.error("worker %d did not stop within %gs; killing it", worker.index, timeout)
            worker.process.kill()
            worker.process.join()
            status = status or 1
        elif worker.process.exitcode != 0 and status == 0:
            status = 1 if worker.process.exitcode != STARTUP_FAILURE else STARTUP_FAILURE
    return status


def _signal(process: BaseProcess, sig: int) -> None:
    if process.pid is not None and process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


def _check_port_free(settings: Settings) -> None:
    """Fail at once, in the supervisor, when another process holds the port."""
    with _socket(settings) as probe:
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None


def _bound(settings: Settings) -> socket.socket:
    """A worker's own socket on the shared port, bound but not yet listening: the server
    listens once the model is loaded and verified, so a starting (or replacement) worker
    never takes connections it cannot answer yet; until then the kernel sends every new
    connection to the workers that listen."""
    sock = _socket(settings)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    return sock


def _socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _per_worker(settings: Settings) -> Settings:
    """Each worker's settings: TensorFlow threads shared out between the workers when left
    to TensorFlow (which would give every worker all the cores)."""
    if settings.intra_op_threads:
        return settings
    cores = len(os.sched_getaffinity(0))
    return settings.model_copy(
        update={"intra_op_threads": max(1, cores // settings.workers), "inter_op_threads": 1}
    )


def _worker_main(settings: Settings, group: WorkerGroup) -> None:
    """A worker process: the app on its own socket, reporting its state to the group."""
    from service.serving.app import create_app
    from service.serving.server import run_server

    _stop_with_the_supervisor()
    try:
        sock = _bound(settings)
    except OSError as exc:
        log.error("worker %d cannot listen on port %d: %s", group.index, settings.port, exc)
        raise SystemExit(STARTUP_FAILURE) from None
    app = create_app(settings, workers=group)
    raise SystemExit(run_server(app, settings, sockets=[sock]))


def _stop_with_the_supervisor() -> None:
    """Have the kernel send this worker SIGTERM (a graceful drain) when the supervisor dies,
    however it dies (SIGKILL, OOM): no worker keeps serving the port on its own. Linux only;
    elsewhere a worker outlives a killed supervisor."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
