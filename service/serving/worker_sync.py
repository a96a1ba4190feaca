"""Changes to what is served, made through the API in one worker, applied by every worker.

Each worker of ``mmserve serve --workers N`` holds its own models. A load, an unload, a
label change or a reload arrives at one of them; that worker makes the change itself first
(so a model that fails to load is refused before anything else moves), records it in the
group's ``served.json`` (:mod:`service.serving.worker_state`), and signals every worker
through the supervisor (the SIGHUP fan-out of a reload). Each worker then re-reads the
labels, loads or unloads models until it serves what ``served.json`` says, serves the
newest loadable version of each in the store, and records the change's generation in its
slot of a shared array. The request is answered once every ready worker has applied the
change, as Triton answers a repository load once the model serves: a client that gets 200
for a load (or a reload) finds the model (or the version) on every connection after it.

    worker k (API request)                supervisor             every worker
      change locally, record served.json
      SIGHUP ───────────────────────────────> SIGHUP ──────────────> follow served.json,
      wait until every applied[i] >= G  <──────────────────────────── applied[i] = G

A worker started later (a replacement) serves what ``served.json`` says from the start.
One process (no group): the change is all there is. No FastAPI, no TensorFlow here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from service.errors import DeadlineExceeded, ModelLoadFailed, NotFound, ServiceError
from service.serving.inference.registry import ModelRegistry
from service.serving.worker_state import WorkerGroup

log = logging.getLogger("mmserve.workers")

_POLL_S = 0.01
"""How often a worker that made a change looks at the others' progress."""


class GroupChanges:
    """This worker's side of the group's changes (a no-op outside a group)."""

    def __init__(self, group: WorkerGroup | None, timeout: float) -> None:
        self.group = group if group is not None and group.shares_models else None
        self._timeout = timeout
        # One change at a time in this worker: following served.json while a change of
        # this worker's own is half made would undo it.
        self._lock = asyncio.Lock()
        self._following: set[asyncio.Task[None]] = set()

    def models_at_start(self) -> tuple[int, tuple[str, ...] | None]:
        """What a starting worker serves: the group's models once one was changed through
        the API (with that change's generation), else None (its settings decide)."""
        if self.group is None:
            return 0, None
        served = self.group.served()
        return served.generation, served.models

    async def started(self, registry: ModelRegistry, generation: int) -> None:
        """Record that this worker, just started, serves change ``generation``, and apply
        any change made while it was loading."""
        if self.group is not None:
            self.group.mark_applied(generation)
            await self._follow_locked(registry)

    @contextlib.asynccontextmanager
    async def change(
        self, registry: ModelRegistry, *, load: str | None = None, unload: str | None = None
    ) -> AsyncIterator[None]:
        """Make a change in the ``with`` block (here), then have every worker apply it:
        ``load`` or ``unload`` a model, or neither (labels or canary). Nothing reaches the
        other workers when the block raises."""
        group = self.group
        if group is None:
            yield
            return
        async with self._lock:
            yield
            generation = await asyncio.to_thread(
                group.record, sorted(registry.models), load, unload
            )
            # Changes other workers made meanwhile are in served.json too: apply them here.
            await self._follow(registry)
        started = time.monotonic()
        group.reload_all()
        await self._wait(generation)
        log.info(
            "change %d applied by all %d workers in %.3fs",
            generation,
            group.size,
            time.monotonic() - started,
        )

    def follow_soon(self, registry: ModelRegistry) -> None:
        """Apply ``served.json`` in the background (on SIGHUP); from the event loop's
        thread, a signal handler included."""
        if self.group is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._follow_locked(registry), name="mmserve-follow"
        )
        self._following.add(task)  # kept alive until done
        task.add_done_callback(self._following.discard)

    async def _follow_locked(self, registry: ModelRegistry) -> None:
        async with self._lock:
            await self._follow(registry)

    async def _follow(self, registry: ModelRegistry) -> None:
        """Load and unload until this worker serves what the group should, serve the newest
        versions in the store, then record the change's generation (negative when a model
        failed to load)."""
        assert self.group is not None
        served = await asyncio.to_thread(self.group.served)
        if served.models is None or served.generation <= self.group.applied_by(self.group.index):
            return
        wanted, serving = set(served.models), set(registry.models)
        ok = True
        for name in sorted(wanted - serving):
            try:
                await registry.load(name)
            except ServiceError as exc:
                log.error("worker %d cannot load %s: %s", self.group.index, name, exc.message)
                ok = False
        for name in sorted(serving - wanted):
            with contextlib.suppress(NotFound):  # unloaded meanwhile
                await registry.unload(name)
        # A reload through the API is a change too: each worker serves the store's newest
        # loadable versions before it counts as having applied it.
        await registry.check_store()
        self.group.mark_applied(served.generation, ok)

    async def _wait(self, generation: int) -> None:
        """Until every ready worker has applied ``generation``: 504 past the timeout, 409
        when one failed."""
        assert self.group is not None
        deadline = time.monotonic() + self._timeout
        while behind := self.group.behind(generation):
            if time.monotonic() > deadline:
                raise DeadlineExceeded(
                    f"workers {behind} of {self.group.size} did not apply the change within "
                    f"{self._timeout:g}s; they keep trying (see their logs)"
                )
            await asyncio.sleep(_POLL_S)
        if failed := self.group.failed(generation):
            raise ModelLoadFailed(
                f"workers {failed} of {self.group.size} could not apply the change (see their "
                "logs); the others did. Retry the request to try again"
            )
