"""Background load for end-to-end tests: threads sending one request over and over until
stopped, counting every answer by status and every transport failure."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

Send = Callable[[httpx.Client], httpx.Response]


@dataclass
class LoadResult:
    """What the load's requests got."""

    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failed(self) -> int:
        """Requests answered with anything but 200, or not answered at all."""
        return self.total - self.statuses[200]


@contextmanager
def background_load(url: str, send: Send, threads: int = 2) -> Iterator[LoadResult]:
    """Run ``send`` (with a keep-alive client of ``url``) in ``threads`` threads until the
    block ends; the result fills in as answers arrive and is complete after the block."""
    result = LoadResult()
    lock = threading.Lock()
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = send(client)
                except httpx.HTTPError as exc:
                    with lock:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    result.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        result.versions[int(response.headers["x-model-version"])] += 1

    workers = [threading.Thread(target=run, name=f"load-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield result
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)
