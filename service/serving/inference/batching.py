"""Adaptive batching: requests that arrive together run as one model call.

A lone request runs at once (no added delay while the model is idle). While the model is
busy, new requests queue; when it finishes, everything queued (up to ``max_batch_size``
items) runs as the next batch, so the batch size adapts to the load.

The queue belongs to one model thread, which takes each batch itself and hands the
results back to each caller's event loop. Requests are queued from the event loop
(:meth:`AdaptiveBatcher.predict`) or, for images still to be decoded, by the decoding
thread as soon as they are ready (:meth:`AdaptiveBatcher.predict_prepared`): the event
loop is then not on the way from a decoded image to the model, which it would otherwise
be on for every request, however busy it is. While requests are being refused (the service
is saturated, :attr:`AdaptiveBatcher.refusing`), callers go back to queueing from the event
loop: the decoding threads then wait for it, and it keeps the share of the cores it needs to
refuse quickly and to answer the requests it took.

Callers announce requests before their images are decoded (:meth:`arriving`). When a batch
is ready while announced requests are still decoding, it waits for them, up to
``max_batch_delay``, so that bursts share one model call instead of trickling in one by
one. It waits only for the requests announced by the time it was ready (when its first
request was queued, the model being idle; or when the model came free, for a request
queued while it ran a batch), not for those announced later: under a steady stream of
arrivals, there is always another one on its way, and waiting for it would hold every
batch for the whole delay. Nothing waits on requests that are not on their way: an idle
service adds no delay.

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
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import DeadlineExceeded, QueueFull, ServiceUnavailable

log = logging.getLogger("mmserve.batching")

PredictFn = Callable[[np.ndarray, list[str]], np.ndarray]

REFUSING_S = 1.0
"""How long after a refusal a batcher counts as saturated (:attr:`AdaptiveBatcher.refusing`):
the ``Retry-After`` a refused client is given."""


class BatchObserver(Protocol):
    """Receives one record per model call (metrics), on the model thread."""

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
    # The requests on their way when this one was queued into an empty queue with the model
    # idle, so that a batch it starts waits for them and not for later ones; None when it
    # queued behind others or while the model ran a batch (its batch is ready when the
    # model comes free, and looks then).
    awaited: set[Arrival] | None = None

    @property
    def size(self) -> int:
        return len(self.texts)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The caller's event loop, where its future is settled."""
        return self.future.get_loop()


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
        """Stop counting the request (once; later calls do nothing). Any thread."""
        with self.batcher._cond:
            self._release_locked()

    def _release_locked(self) -> None:
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


def _settle(future: asyncio.Future[np.ndarray], result: np.ndarray | BaseException) -> None:
    """Give ``future`` its result or exception unless its caller already left (the
    caller's event loop runs this)."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _settle_all(results: list[tuple[asyncio.Future[np.ndarray], np.ndarray]]) -> None:
    for future, result in results:
        _settle(future, result)


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    """Run ``callback`` on ``loop`` (from the model or a decoding thread); nothing when the
    loop has closed, its callers with it."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


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
        # Everything below is shared with the model thread and changed under this lock.
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._queued_items = 0
        self._admitted = 0  # requests let in by admission control, not yet queued nor ended
        self._on_the_way: set[Arrival] = set()  # announced, not queued nor given up
        self._closed = False
        self._thread: threading.Thread | None = None
        self._running = False  # the model thread is running a batch
        self._refused_at = -math.inf  # when a request for it was last refused (monotonic)
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

    @property
    def refusing(self) -> bool:
        """Whether a request for this batcher was refused, at admission or at the queue,
        within the last :data:`REFUSING_S` seconds: the service is saturated."""
        return time.monotonic() - self._refused_at < REFUSING_S

    def note_refusal(self) -> None:
        """Admission control refused a request that would have come here (any thread)."""
        self._refused_at = time.monotonic()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[Admitted]:
        """Count a request admission control let in, as one queued item, until its items
        reach the queue (:meth:`predict`, in the same task) or it ends. A request that goes
        to another batcher instead (a canary version's) is counted here until it ends."""
        admitted = Admitted(self)
        with self._cond:
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
        with self._cond:
            self._on_the_way.add(arrival)
        try:
            yield arrival
        finally:
            self._give_up(arrival)

    def _give_up(self, arrival: Arrival) -> None:
        """A request announced that will not reach the queue (it failed before): a batch
        waiting for it stops waiting. Nothing when it did reach the queue."""
        with self._cond:
            if not arrival.arrived and arrival in self._on_the_way:
                self._on_the_way.discard(arrival)
                self._cond.notify_all()

    def start(self) -> None:
        """Start the model thread (once; any thread)."""
        if self._thread is not None:
            return
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="mmserve-model", daemon=True
                )
                self._thread.start()

    async def predict(
        self, images: np.ndarray, texts: Sequence[str], arrival: Arrival | None = None
    ) -> np.ndarray:
        """Probabilities [N, C] for N images and texts, computed in some batch.

        ``arrival`` is the announcement made by :meth:`arriving`, if any.
        """
        future = asyncio.get_running_loop().create_future()
        self._enqueue(images, texts, future, arrival, self._own_admission())
        return await self._answer(future)

    async def predict_prepared(
        self,
        prepare: Callable[[], np.ndarray],
        texts: Sequence[str],
        executor: Executor,
        arrival: Arrival | None = None,
    ) -> np.ndarray:
        """As :meth:`predict`, for images that ``prepare`` makes on one of ``executor``'s
        threads (decoding): that thread queues the request as soon as they are ready. An
        exception from ``prepare`` is raised here as it was raised there."""
        if self._closed:
            raise self._shutting_down()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        admitted = self._own_admission()

        def work() -> None:
            try:
                images = prepare()
                self._enqueue(images, texts, future, arrival, admitted)
            except BaseException as exc:  # handed to the caller, whatever it is
                if arrival is not None:
                    self._give_up(arrival)
                _call_in(loop, _settle, future, exc)

        def dropped(submitted: Future[None]) -> None:
            if submitted.cancelled():  # the decoding threads stopped before it started
                _call_in(loop, _settle, future, self._shutting_down())

        self.start()
        try:
            executor.submit(work).add_done_callback(dropped)
        except RuntimeError as exc:  # the decoding threads have stopped
            raise self._shutting_down() from exc
        return await self._answer(future)

    def _shutting_down(self) -> ServiceUnavailable:
        return ServiceUnavailable("the service is shutting down", retry_after=self.retry_after)

    def _own_admission(self) -> Admitted | None:
        """The current request's admission, when it was made for this batcher."""
        admitted = _ADMITTED.get()
        return admitted if admitted is not None and admitted.batcher is self else None

    def _enqueue(
        self,
        images: np.ndarray,
        texts: Sequence[str],
        future: asyncio.Future[np.ndarray],
        arrival: Arrival | None,
        admitted: Admitted | None,
    ) -> None:
        """Queue a request (any thread); raises what the caller answers at once."""
        n = len(texts)
        with self._cond:
            now = time.monotonic()
            if admitted is not None:
                admitted._release_locked()  # its items are counted as queued from here on
            if self._closed:
                raise self._shutting_down()
            if self._queued_items and self._queued_items + n > self.max_queue_items:
                self.note_refusal()
                raise QueueFull(
                    f"the queue holds {self._queued_items} items (limit {self.max_queue_items})",
                    retry_after=self.retry_after,
                )
            if arrival is not None and not arrival.arrived:
                arrival.arrived = True
                self._on_the_way.discard(arrival)
            job = _Job(images, list(texts), future, now, now + self.timeout)
            if not self._pending and not self._running:
                job.awaited = set(self._on_the_way)
            self._pending.append(job)
            self._queued_items += n
            if self._observer is not None:  # under the lock: depths are reported in order
                self._observer.observe_queue(self._queued_items)
            self._cond.notify_all()
        self.start()

    async def _answer(self, future: asyncio.Future[np.ndarray]) -> np.ndarray:
        try:
            done, _ = await asyncio.wait({future}, timeout=self.timeout)
        except asyncio.CancelledError:
            future.cancel()  # the caller went away: the model thread drops the job unrun
            raise
        if not done:
            future.cancel()
            raise DeadlineExceeded(f"no answer within the {self.timeout:g}s deadline")
        return future.result()

    async def close(self) -> None:
        """Refuse new requests (503), answer every queued one, then stop the model
        thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def _serve(self) -> None:
        """The model thread: take each batch and run it, until closed and drained."""
        while True:
            with self._cond:
                self._running = False
                while not self._pending:
                    if self._closed:
                        return
                    self._cond.wait()
                if self.max_batch_delay > 0 and self._on_the_way and not self._closed:
                    head = self._pending[0]
                    if head.awaited is None:  # ready now, the model being free
                        awaited, ready = set(self._on_the_way), time.monotonic()
                    else:  # ready when it was queued
                        awaited, ready = head.awaited, head.enqueued
                    self._gather(awaited, ready + self.max_batch_delay)
                batch, expired = self._take()
                self._running = bool(batch)
                if self._observer is not None:
                    self._observer.observe_queue(self._queued_items)
            for job in expired:
                _call_in(
                    job.loop,
                    _settle,
                    job.future,
                    DeadlineExceeded(f"waited past the {self.timeout:g}s deadline in the queue"),
                )
            if batch:
                try:
                    self._run(batch)
                except Exception as exc:  # never lose the model thread
                    log.exception("a batch of %d requests could not be run", len(batch))
                    for job in batch:
                        _call_in(job.loop, _settle, job.future, exc)

    def _gather(self, awaited: set[Arrival], until: float) -> None:
        """Hold a partial batch open while any of the ``awaited`` requests (those on their
        way when it was ready) still is, until it is full or ``until`` (monotonic) passes.
        Called with the lock held."""
        while (
            not awaited.isdisjoint(self._on_the_way)
            and self._queued_items < self.max_batch_size
            and not self._closed
        ):
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _take(self) -> tuple[list[_Job], list[_Job]]:
        """Pop the next batch: live jobs in arrival order, up to ``max_batch_size`` items;
        and the jobs found past their deadline. Called with the lock held.

        A single job larger than the limit runs alone rather than never.
        """
        batch: list[_Job] = []
        expired: list[_Job] = []
        items = 0
        now = time.monotonic()
        while self._pending:
            job = self._pending[0]
            # The caller's loop owns the future; reading whether it is done (cancelled by
            # its caller) from here at worst runs a job whose caller just left.
            if job.future.done() or now > job.deadline:
                self._pending.popleft()
                self._queued_items -= job.size
                if not job.future.done():
                    expired.append(job)
                continue
            if batch and items + job.size > self.max_batch_size:
                break
            self._pending.popleft()
            self._queued_items -= job.size
            batch.append(job)
            items += job.size
        return batch, expired

    def _run(self, batch: list[_Job]) -> None:
        images = batch[0].images if len(batch) == 1 else np.concatenate([j.images for j in batch])
        texts = [t for job in batch for t in job.texts]
        started = time.monotonic()
        try:
            probs = self._predict(images, texts)
        except Exception as exc:
            if len(batch) == 1:
                _call_in(batch[0].loop, _settle, batch[0].future, exc)
                return
            log.warning("a batch of %d requests failed (%s); retrying one by one", len(batch), exc)
            for job in batch:
                self._run([job])
            return
        elapsed = time.monotonic() - started
        self._record(len(texts), [started - job.enqueued for job in batch], elapsed)
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[np.ndarray], np.ndarray]]
        ]
        by_loop = {}
        offset = 0
        for job in batch:
            by_loop.setdefault(job.loop, []).append((job.future, probs[offset : offset + job.size]))
            offset += job.size
        for loop, results in by_loop.items():
            _call_in(loop, _settle_all, results)

    def _record(self, size: int, queue_seconds: list[float], inference_seconds: float) -> None:
        self.stats.batches += 1
        self.stats.items += size
        self.stats.sizes.append(size)
        del self.stats.sizes[: -self._keep_sizes]
        if self._observer is not None:
            self._observer.observe_batch(size, queue_seconds, inference_seconds)
