"""Hot model reload: load a newer version beside the served one, verify it, swap it in.

The served model keeps answering while a newer version is loaded, warmed up and checked
against its golden examples in a worker thread. Only a version that passes every step is
swapped in, with one assignment of the service's runtime reference; requests that already
hold the old runtime finish on it, and it is closed once they are done. A version that
fails is rejected with a log line and remembered, so neither the watcher nor the reload
endpoint loads it again (unless its folder is replaced, which gives it a new identity).

Which runtime is served lives with the caller (``current``/``install``; the registry keeps
older versions beside the new one under a ``latest:N`` policy): this module only
decides when and what to swap, and imports neither FastAPI nor TensorFlow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.errors import ReloadRejected, ServiceError
from service.model_store import ModelVersion, list_versions
from service.serving.inference.classifier import Classifier
from service.serving.inference.runtime import Runtime

log = logging.getLogger("mmserve.reload")

LoadFn = Callable[[ModelVersion], Classifier]
"""Load, warm up and verify a version; runs in a worker thread and raises on any failure."""

StartFn = Callable[[Classifier], Runtime]
"""Start the workers for a loaded classifier; runs on the event loop."""

_Identity = tuple[int, int]


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload attempt did."""

    model: str
    version: int
    """The version served after the attempt."""
    previous_version: int
    reloaded: bool
    message: str


@dataclass(frozen=True)
class _Rejection:
    identity: _Identity
    reason: str


class ModelReloader:
    """Follows the newest version of one model in the store. One reload runs at a time."""

    def __init__(
        self,
        *,
        store: Path,
        name: str,
        current: Callable[[], Runtime],
        install: Callable[[Runtime], Sequence[Runtime] | None],
        start: StartFn,
        load: LoadFn | None,
        pinned: bool = False,
        retire_timeout: float = 30.0,
        on_retired: Callable[[], object] | None = None,
    ) -> None:
        self._store = store
        self._name = name
        self._current = current
        self._install = install
        self._start = start
        self._load = load
        self._pinned = pinned
        self._retire_timeout = retire_timeout
        self._on_retired = on_retired
        self._lock = asyncio.Lock()
        self._rejected: dict[int, _Rejection] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def served(self) -> Classifier:
        """The classifier served now."""
        return self._current().classifier

    @property
    def rejected(self) -> dict[int, str]:
        """Versions that failed to load, with the reason."""
        return {version: r.reason for version, r in self._rejected.items()}

    @property
    def watching(self) -> bool:
        """Whether the store is being polled for new versions."""
        return self._watcher is not None and not self._watcher.done()

    async def reload(self) -> ReloadOutcome:
        """Serve the newest loadable version above the served one, if there is one.

        Tries newer versions from the newest down and stops at the first that loads.
        Raises :class:`ReloadRejected` when there are newer versions but none can be served.
        """
        async with self._lock:
            return await self._reload()

    def reload_soon(self) -> None:
        """Start :meth:`reload` in the background; from the event loop's thread, a signal
        handler included. The outcome is logged."""
        task = asyncio.get_running_loop().create_task(self.reload_logged(), name="mmserve-reload")
        self._retiring.add(task)  # kept alive, and awaited by close()
        task.add_done_callback(self._retiring.discard)

    async def reload_logged(self) -> None:
        """:meth:`reload`, its outcome logged and any failure logged, never raised."""
        try:
            outcome = await self.reload()
        except ReloadRejected:
            return  # already logged, version by version
        except Exception:
            log.exception("reload failed")
            return
        log.info("reload: %s", outcome.message)

    def watch(self, interval: float) -> None:
        """Poll the store every ``interval`` seconds and reload when a new version appears.

        Does nothing for 0, for a pinned version, or without a loader.
        """
        if interval <= 0 or self._pinned or self._load is None or self._watcher is not None:
            return
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch(interval), name="mmserve-model-watcher")
        log.info("watching %s for new versions of %s every %gs", self._store, self._name, interval)

    async def close(self) -> None:
        """Stop watching, let a reload in progress finish, and wait for old runtimes to close."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        async with self._lock:
            pass
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                # Checked before taking the lock, so a remembered rejection costs one listing.
                if await self._newer_candidates():
                    await self.reload()
            except ReloadRejected:
                pass  # already logged, version by version
            except Exception:
                log.exception("model watcher: unexpected error; still watching")

    async def _newer_candidates(self) -> list[ModelVersion]:
        """Versions above the served one that have not been rejected as they are, newest first."""
        served = self.served.version
        versions = await asyncio.to_thread(list_versions, self._store, self._name)
        candidates = []
        for number in sorted((v for v in versions if v > served), reverse=True):
            version = self._version(number)
            if self._remembered(version) is None:
                candidates.append(version)
        return candidates

    async def _reload(self) -> ReloadOutcome:
        old = self._current()
        served = old.classifier.version
        if self._pinned:
            return self._outcome(served, served, f"version {served} is pinned; it never changes")
        if self._load is None:
            return self._outcome(served, served, "this service was given a fixed classifier")
        versions = await asyncio.to_thread(list_versions, self._store, self._name)
        newer = sorted((v for v in versions if v > served), reverse=True)
        if not newer:
            return self._outcome(served, served, f"version {served} is the newest")
        failures: list[str] = []
        for number in newer:
            version = self._version(number)
            reason = self._remembered(version)
            if reason is None:
                reason = await self._try_swap(version, old)
                if reason is None:
                    message = f"now serving version {number} (was {served})"
                    if failures:
                        message += f"; rejected {'; '.join(failures)}"
                    return self._outcome(number, served, message)
            failures.append(f"version {number}: {reason}")
        raise ReloadRejected(
            f"no newer version of {self._name!r} can be served ({'; '.join(failures)}); "
            f"version {served} keeps serving"
        )

    async def _try_swap(self, version: ModelVersion, old: Runtime) -> str | None:
        """Load ``version`` beside ``old`` and swap it in; the reason when it fails."""
        assert self._load is not None
        log.info(
            "loading %s version %d beside version %d",
            self._name,
            version.version,
            old.classifier.version,
        )
        try:
            classifier = await asyncio.to_thread(self._load, version)
        except Exception as exc:
            reason = (
                exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
            )
            self._rejected[version.version] = _Rejection(_identity(version.path), reason)
            log.error(
                "rejected %s version %d: %s; version %d keeps serving",
                self._name,
                version.version,
                reason,
                old.classifier.version,
            )
            return reason
        # Start and install with no await in between: a request sees the old runtime or
        # the new one, never neither. ``install`` says which runtimes it stopped serving
        # (None: the old one), which close once their requests are done.
        dropped = self._install(self._start(classifier))
        self._rejected.pop(version.version, None)
        for runtime in [old] if dropped is None else dropped:
            self.retire_later(runtime)
        log.info(
            "now serving %s version %d (was %d); the old version closes when its requests end",
            self._name,
            version.version,
            old.classifier.version,
        )
        return None

    def retire_later(self, runtime: Runtime) -> None:
        """Close ``runtime`` in the background once its requests are done (``close`` waits)."""
        task = asyncio.get_running_loop().create_task(
            self._retire(runtime), name=f"mmserve-retire-v{runtime.classifier.version}"
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Runtime) -> None:
        await old.retire(self._retire_timeout)
        if self._on_retired is not None:
            self._on_retired()

    def _remembered(self, version: ModelVersion) -> str | None:
        """Why ``version`` was rejected, if it was and its folder is still the same one."""
        rejection = self._rejected.get(version.version)
        if rejection is None or rejection.identity != _identity(version.path):
            return None
        return rejection.reason

    def _version(self, number: int) -> ModelVersion:
        return ModelVersion(self._name, number, self._store / self._name / str(number))

    def _outcome(self, version: int, previous: int, message: str) -> ReloadOutcome:
        return ReloadOutcome(
            model=self._name,
            version=version,
            previous_version=previous,
            reloaded=version != previous,
            message=message,
        )


def _identity(path: Path) -> _Identity:
    """The folder's inode and modification time: replacing the folder changes them
    (a folder that is gone has none)."""
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return stat.st_ino, stat.st_mtime_ns
