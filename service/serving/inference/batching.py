"""Adaptive batching: requests that arrive together run as one model call.

A lone request runs at once (no added delay while the model is idle). While the model is
busy, new requests queue; when it finishes, everything queued (up to ``max_batch_size``
items) runs as the next batch, so the batch size adapts to the load.

Callers announce requests before their images are decoded (:meth:`arriving`). When a batch
is ready while announced requests are still decoding, it waits for them, up to
``max_batch_delay``, so that bursts share one model call instead of trickling in one by
one. It waits only for the requests announced by the time it was ready, not for those
announced during the wait: under a steady stream of arrivals, there is always another one
on its way, and waiting for it would hold every batch for the whole delay. Nothing waits
on requests that are not on their way: an idle service adds no delay.

The queue is bounded (``QueueFull`` -> 503 with Retry-After). Admission control counts the
requests it let in that have not reached the queue yet (:meth:`admitted`), one item each,
as if they were queued: it refuses while those and the queued items fill the queue, so that
a request it takes is not refused later, after its body was read and its images decoded.
Every request has a deadline
(``DeadlineExceeded`` -> 504), results are split back to each caller, a request whose
caller went away is dropped before it reaches the model, and a failing batch is retried
item by item so that one bad request does not fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import DeadlineExceeded, QueueFull, ServiceUnavailable

log = logging.getLogger("mmserve.batching")

PredictFn = Callable[[np.ndarray, list[str]], np.ndarray]


class BatchObserver(Protocol):
    """Receives one record per model call (metrics)."""

    def observe_batch(
        self, size: int, queue_seconds: Sequence[float], inference_seconds: float
    ) -> None: ...

    def observe_queue(self, depth: int) -> None:
        """The number of items waiting, after it changed."""
        ...


@dataclass(eq=False)
class _Job:
    images: np.ndarray
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    enqueued: float
    deadline: float

    @property
    def size(self) -> int:
        return len(self.texts)


@dataclass(eq=False)
class Arrival:
    """A request announced to the batcher before its images are ready."""

    arrived: bool = False


@dataclass(eq=False)
class Admitted:
    """A request admission control let in for a batcher, counted by it until the request
    reaches its queue or ends (:meth:`AdaptiveBatcher.admitted`)."""

    batcher: AdaptiveBatcher
    counted: bool = True

    def release(self) -> None:
        """Stop counting the request (once; later calls do nothing)."""
        if self.counted:
            self.counted = False
            self.batcher._admitted -= 1


_ADMITTED: contextvars.ContextVar[Admitted | None] = contextvars.ContextVar(
    "mmserve_admitted", default=None
)
"""The current request's admission, released when it reaches the queue."""


@dataclass
class BatchStats:
    """Running totals, for logs and tests."""

    batches: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)


class AdaptiveBatcher:
    """Queues ``predict`` calls and runs them in batches on one model thread."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 32,
        max_batch_delay: float = 0.0,
        max_queue_items: int = 256,
        timeout: float = 30.0,
        retry_after: int = 1,
        observer: BatchObserver | None = None,
        keep_sizes: int = 1000,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay
        self.max_queue_items = max_queue_items
        self.timeout = timeout
        self.retry_after = retry_after
        self._observer = observer
        self._keep_sizes = keep_sizes
        self._pending: deque[_Job] = deque()
        self._queued_items = 0
        self._admitted = 0  # requests let in by admission control, not yet queued nor ended
        self._on_the_way: set[Arrival] = set()  # announced, not queued nor given up
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmserve-model")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = BatchStats()

    @property
    def queued_items(self) -> int:
        """Items waiting for the model (not counting the batch it is running)."""
        return self._queued_items

    @property
    def admitted_requests(self) -> int:
        """Requests admission control let in that have not reached the queue yet."""
        return self._admitted

    @property
    def full(self) -> bool:
        """Whether admission control refuses a new request: the queued items and the
        requests let in on their way to the queue (one item each) fill the queue."""
        return self._queued_items + self._admitted >= self.max_queue_items

    @contextlib.contextmanager
    def admitted(self) -> Iterator[Admitted]:
        """Count a request admission control let in, as one queued item, until its items
        reach the queue (:meth:`predict`, in the same task) or it ends. A request that goes
        to another batcher instead (a canary version's) is counted here until it ends."""
        admitted = Admitted(self)
        self._admitted += 1
        token = _ADMITTED.set(admitted)
        try:
            yield admitted
        finally:
            _ADMITTED.reset(token)
            admitted.release()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Announce a request that will call :meth:`predict` soon."""
        arrival = Arrival()
        self._on_the_way.add(arrival)
        try:
            yield arrival
        finally:
            if not arrival.arrived:  # it failed before reaching the queue
                self._on_the_way.discard(arrival)
                self._wakeup.set()

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def predict(
        self, images: np.ndarray, texts: Sequence[str], arrival: Arrival | None = None
    ) -> np.ndarray:
        """Probabilities [N, C] for N images and texts, computed in some batch.

        ``arrival`` is the announcement made by :meth:`arriving`, if any.
        """
        admitted = _ADMITTED.get()
        if admitted is not None and admitted.batcher is self:
            admitted.release()  # its items are counted as queued from here on
        if self._closed:
            raise ServiceUnavailable("the service is shutting down", retry_after=self.retry_after)
        n = len(texts)
        if self._queued_items and self._queued_items + n > self.max_queue_items:
            raise QueueFull(
                f"the queue holds {self._queued_items} items (limit {self.max_queue_items})",
                retry_after=self.retry_after,
            )
        self.start()
        now = time.monotonic()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        job = _Job(images, list(texts), future, now, now + self.timeout)
        self._pending.append(job)
        self._queued_items += n
        if self._observer is not None:
            self._observer.observe_queue(self._queued_items)
        if arrival is not None and not arrival.arrived:
            arrival.arrived = True
            self._on_the_way.discard(arrival)
        self._wakeup.set()
        try:
            done, _ = await asyncio.wait({future}, timeout=self.timeout)
        except asyncio.CancelledError:
            future.cancel()  # the caller went away: the loop drops the job unrun
            raise
        if not done:
            future.cancel()
            raise DeadlineExceeded(f"no answer within the {self.timeout:g}s deadline")
        return future.result()

    async def close(self) -> None:
        """Refuse new requests (503), answer every queued one, then stop the loop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def _loop(self) -> None:
        while True:
            while not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_batch_delay > 0 and self._on_the_way and not self._closed:
                await self._gather(set(self._on_the_way), time.monotonic() + self.max_batch_delay)
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _gather(self, awaited: set[Arrival], until: float) -> None:
        """Hold a partial batch open while any of the ``awaited`` requests (those on their
        way when it was ready) still is, until it is full or ``until`` (monotonic) passes."""
        while (
            not awaited.isdisjoint(self._on_the_way)
            and self._queued_items < self.max_batch_size
            and not self._closed
        ):
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take(self) -> list[_Job]:
        """Pop the next batch: live jobs in arrival order, up to ``max_batch_size`` items.

        A single job larger than the limit runs alone rather than never.
        """
        batch: list[_Job] = []
        items = 0
        now = time.monotonic()
        while self._pending:
            job = self._pending[0]
            if not job.future.done() and now > job.deadline:
                job.future.set_exception(
                    DeadlineExceeded(f"waited past the {self.timeout:g}s deadline in the queue")
                )
            if job.future.done():  # cancelled by its caller, or expired
                self._pending.popleft()
                self._queued_items -= job.size
                continue
            if batch and items + job.size > self.max_batch_size:
                break
            self._pending.popleft()
            self._queued_items -= job.size
            batch.append(job)
            items += job.size
        if self._observer is not None:
            self._observer.observe_queue(self._queued_items)
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        images = batch[0].images if len(batch) == 1 else np.concatenate([j.images for j in batch])
        texts = [t for job in batch for t in job.texts]
        started = time.monotonic()
        try:
            probs = await loop.run_in_executor(self._executor, self._predict, images, texts)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            log.warning("a batch of %d requests failed (%s); retrying one by one", len(batch), exc)
            for job in batch:
                await self._run([job])
            return
        elapsed = time.monotonic() - started
        self._record(len(texts), [started - job.enqueued for job in batch], elapsed)
        offset = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(probs[offset : offset + job.size])
            offset += job.size

    def _record(self, size: int, queue_seconds: list[float], inference_seconds: float) -> None:
        self.stats.batches += 1
        self.stats.items += size
        self.stats.sizes.append(size)
        del self.stats.sizes[: -self._keep_sizes]
        if self._observer is not None:
            self._observer.observe_batch(size, queue_seconds, inference_seconds)
