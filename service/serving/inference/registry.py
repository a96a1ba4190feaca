"""The served models: a runtime per served version, labels, canary traffic, load and unload.

    ModelRegistry ── the set of served models; the one place that says "is this served"
      └── ServedModel (per name) ── its version policy, labels and canary share
            ├── Runtime (per served version) ── classifier, decoder, batcher
            └── ModelReloader ── follows the store's newest version (hot reload)

Every version is loaded by the same function at start-up, on a hot reload and on a load
through the API (load, warm-up, golden check). A request picks its runtime once
(:meth:`ServedModel.route`) and holds it to the end, so moving a label, promoting a canary
or unloading a model never fails a request in flight: what is no longer served closes once
its requests are done. Labels live in the store (``<name>/labels.json``), so every worker
process, and the next start, sees the same ones. No FastAPI here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from service import model_store
from service.errors import ModelLoadFailed, NotFound, ServiceError
from service.model_store import ModelVersion, Routing
from service.serving.inference.classifier import Classifier
from service.serving.inference.policy import VersionPolicy
from service.serving.inference.reloader import LoadFn, ModelReloader, StartFn
from service.serving.inference.runtime import Runtime

log = logging.getLogger("mmserve.registry")

STABLE, CANARY = "stable", "canary"


@dataclass(frozen=True)
class RepositoryEntry:
    """A model of the store (or one given to the service) and whether it is served."""

    name: str
    versions: list[int]
    served: list[int]

    @property
    def ready(self) -> bool:
        return bool(self.served)


class ServedModel:
    """One model: its runtimes by version, its labels, and how unpinned requests are split."""

    def __init__(
        self,
        name: str,
        policy: VersionPolicy,
        runtimes: dict[int, Runtime],
        routing: Routing,
        default_canary_percent: float,
        memory: dict[int, int | None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        # Replaced as a whole, never changed in place: a reader holds one consistent view.
        self._runtimes = dict(runtimes)
        self.memory: dict[int, int | None] = dict(memory or {})
        self.routing = routing
        self._default_canary = default_canary_percent
        self._unpinned = 0
        self.reloader: ModelReloader | None = None

    @property
    def runtimes(self) -> dict[int, Runtime]:
        """The served versions' runtimes (a copy)."""
        return dict(self._runtimes)

    @property
    def versions(self) -> list[int]:
        """The served versions, ascending."""
        return sorted(self._runtimes)

    @property
    def labels(self) -> dict[str, int]:
        return dict(self.routing.labels)

    @property
    def canary_percent(self) -> float:
        """Share of unpinned requests the ``canary`` version answers (when it is served)."""
        if self.routing.canary_percent is not None:
            return self.routing.canary_percent
        return self._default_canary

    def latest(self) -> Runtime:
        """The runtime of the highest served version."""
        return self._runtimes[max(self._runtimes)]

    def primary(self) -> Runtime:
        """What unpinned requests get outside the canary share: ``stable`` when it points
        to a served version, else the highest."""
        stable = self.routing.labels.get(STABLE)
        if stable is not None and stable in self._runtimes:
            return self._runtimes[stable]
        return self.latest()

    def route(self, version: int | None = None, label: str | None = None) -> Runtime:
        """The runtime for a request: a version, a label, or (neither) the canary split."""
        if version is not None:
            runtime = self._runtimes.get(version)
            if runtime is None:
                raise NotFound(
                    f"model {self.name!r} has no version {version} served here "
                    f"(serving {self.versions})"
                )
            return runtime
        if label is not None:
            target = self.routing.labels.get(label)
            if target is None:
                raise NotFound(f"model {self.name!r} has no label {label!r}")
            runtime = self._runtimes.get(target)
            if runtime is None:
                raise NotFound(
                    f"label {label!r} of model {self.name!r} points to version {target}, "
                    f"which is not served (serving {self.versions})"
                )
            return runtime
        canary = self.routing.labels.get(CANARY)
        percent = self.canary_percent
        if canary is not None and canary in self._runtimes and percent > 0:
            # A running count, not a coin: the split is exact over any run of requests.
            self._unpinned += 1
            n = self._unpinned
            if int(n * percent / 100) > int((n - 1) * percent / 100):
                return self._runtimes[canary]
        return self.primary()

    def install(self, runtime: Runtime) -> list[Runtime]:
        """Serve a newly loaded version beside the others, keeping what the policy allows;
        return the runtimes no longer served."""
        version = runtime.classifier.version
        runtimes = {**self._runtimes, version: runtime}
        keep = set(self.policy.select(list(runtimes)))
        dropped = [r for v, r in runtimes.items() if v not in keep]
        if version in self._runtimes and self._runtimes[version] is not runtime:
            dropped.append(self._runtimes[version])
        self._runtimes = {v: r for v, r in runtimes.items() if v in keep}
        for v in list(self.memory):
            if v not in self._runtimes:
                del self.memory[v]
        return dropped


class ModelRegistry:
    """Every served model, by name."""

    def __init__(
        self,
        *,
        store: Path,
        default_name: str,
        policy_for: Callable[[str], VersionPolicy],
        start: StartFn,
        load: LoadFn | None,
        canary_percent: float = 0.0,
        retire_timeout: float = 30.0,
        on_change: Callable[[], object] | None = None,
        on_retired: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self.default_name = default_name
        self._policy_for = policy_for
        self._start = start
        self._load = load
        self._canary_percent = canary_percent
        self._retire_timeout = retire_timeout
        self._on_change = on_change
        self._on_retired = on_retired
        self._models: dict[str, ServedModel] = {}
        self._loading: set[str] = set()
        self._lock = asyncio.Lock()
        self._watch_interval = 0.0

    # -- what is served ------------------------------------------------------------------

    @property
    def models(self) -> dict[str, ServedModel]:
        """The served models by name (a copy)."""
        return dict(self._models)

    def get(self, name: str) -> ServedModel:
        """The served model ``name``; 404 when it is not served."""
        model = self._models.get(name)
        if model is None:
            served = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"model {name!r} is not served here (serving: {served})")
        return model

    def default(self) -> ServedModel:
        """The model ``/v1/predict`` answers for: the default name, else the first served."""
        model = self._models.get(self.default_name)
        if model is not None:
            return model
        if not self._models:
            raise NotFound("no model is served")
        return self._models[min(self._models)]

    def find(self, name: str | None) -> ServedModel | None:
        """The served model (the default one for None), or None when it is not served."""
        if name is None:
            return self._models.get(self.default_name)
        return self._models.get(name)

    def repository(self) -> list[RepositoryEntry]:
        """Every model in the store or served, with its versions and the served ones."""
        names = set(model_store.list_models(self.store)) | set(self._models)
        entries = []
        for name in sorted(names):
            model = self._models.get(name)
            stored = model_store.list_versions(self.store, name)
            served = model.versions if model is not None else []
            entries.append(RepositoryEntry(name, sorted(set(stored) | set(served)), served))
        return entries

    # -- loading and unloading -----------------------------------------------------------

    def watch(self, interval: float) -> None:
        """Follow the store's newest versions of every served model (and models loaded
        later) every ``interval`` seconds; 0: never."""
        self._watch_interval = interval
        for model in self._models.values():
            if model.reloader is not None:
                model.reloader.watch(interval)

    def add(self, classifiers: Iterable[Classifier]) -> None:
        """Serve classifiers given by the caller (tests, custom runtimes), one per model name;
        newer versions come from the store only when the registry has a loader."""
        for classifier in classifiers:
            model = self._models.get(classifier.name)
            runtimes = model.runtimes if model is not None else {}
            runtimes[classifier.version] = self._start(classifier)
            self._serve(classifier.name, runtimes, {classifier.version: None})

    async def load(self, name: str) -> ServedModel:
        """Load ``name``'s versions from the store per its policy, each through load,
        warm-up and golden check, and serve them; the served model when it already is."""
        try:
            model_store.validate_name(name)
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        async with self._lock:
            served = self._models.get(name)
            if served is not None:
                return served
            if self._load is None:
                raise ModelLoadFailed(
                    f"model {name!r} cannot be loaded: this service was given fixed classifiers"
                )
            policy = self._policy_for(name)
            stored = await asyncio.to_thread(model_store.list_versions, self.store, name)
            if not stored:
                raise NotFound(f"model {name!r} has no versions in the model store at {self.store}")
            wanted = policy.select(stored)
            if not wanted:
                raise NotFound(
                    f"model {name!r} has none of the versions {policy} (available: {stored})"
                )
            self._loading.add(name)
            try:
                classifiers, memory = await self._load_versions(name, wanted)
            finally:
                self._loading.discard(name)
            runtimes = {c.version: self._start(c) for c in classifiers}
            return self._serve(name, runtimes, memory)

    async def unload(self, name: str) -> list[int]:
        """Stop serving ``name``: new requests get 404 at once, requests in flight finish
        (up to the retire timeout), then its runtimes close. Returns the versions unloaded."""
        async with self._lock:
            model = self.get(name)
            self._models = {n: m for n, m in self._models.items() if n != name}
            self._changed()
        log.info("unloading %s versions %s once their requests end", name, model.versions)
        if model.reloader is not None:
            await model.reloader.close()
        await asyncio.gather(*(r.retire(self._retire_timeout) for r in model.runtimes.values()))
        if self._on_retired is not None:
            self._on_retired()
        return model.versions

    async def close(self) -> None:
        """Stop every watcher and close every runtime (answering what is queued)."""
        models, self._models = list(self._models.values()), {}
        for model in models:
            if model.reloader is not None:
                await model.reloader.close()
        await asyncio.gather(*(r.close() for m in models for r in m.runtimes.values()))

    def reload_soon(self) -> None:
        """Re-read every model's labels and check the store for newer versions now (SIGHUP,
        or another worker changed something); from the event loop's thread."""
        for model in self._models.values():
            self._refresh_routing(model)
            if model.reloader is not None:
                model.reloader.reload_soon()

    async def check_store(self) -> None:
        """As :meth:`reload_soon`, waiting until every model has served its newest loadable
        version (another worker reloaded); failures are logged, never raised."""
        for model in list(self._models.values()):
            self._refresh_routing(model)
            if model.reloader is not None:
                await model.reloader.reload_logged()

    # -- labels and canary ---------------------------------------------------------------

    async def set_label(self, name: str, label: str, version: int) -> ServedModel:
        """Point ``label`` at a served version of ``name`` (stored atomically)."""
        model = self.get(name)
        model_store.validate_label(label)
        model.route(version=version)  # 404 unless served
        labels = {**model.routing.labels, label: version}
        return await self._write(model, model.routing.model_copy(update={"labels": labels}))

    async def remove_label(self, name: str, label: str) -> ServedModel:
        """Remove ``label`` from ``name``; 404 when it has no such label."""
        model = self.get(name)
        if label not in model.routing.labels:
            raise NotFound(f"model {name!r} has no label {label!r}")
        labels = {k: v for k, v in model.routing.labels.items() if k != label}
        return await self._write(model, model.routing.model_copy(update={"labels": labels}))

    async def set_canary(self, name: str, version: int, percent: float | None) -> ServedModel:
        """Send ``percent`` of ``name``'s unpinned requests to ``version`` (label ``canary``);
        the rest go to ``stable`` (when unset: the version served now, or the highest other
        version when that is the canary)."""
        model = self.get(name)
        model.route(version=version)
        labels = dict(model.routing.labels)
        if STABLE not in labels:
            # The version unpinned requests got so far, unless that is the canary itself:
            # then the highest other served version (a new version tried beside the last).
            others = [v for v in model.versions if v != version]
            primary = model.primary().classifier.version
            labels[STABLE] = primary if primary != version or not others else others[-1]
        labels[CANARY] = version
        routing = Routing(
            labels=labels,
            canary_percent=percent if percent is not None else model.routing.canary_percent,
        )
        return await self._write(model, routing)

    async def promote(self, name: str) -> ServedModel:
        """Make the canary the stable version: all unpinned requests go to it."""
        model = self.get(name)
        canary = model.routing.labels.get(CANARY)
        if canary is None:
            raise NotFound(f"model {name!r} has no canary to promote")
        labels = {k: v for k, v in model.routing.labels.items() if k != CANARY}
        labels[STABLE] = canary
        return await self._write(model, model.routing.model_copy(update={"labels": labels}))

    async def rollback(self, name: str) -> ServedModel:
        """Drop the canary: all unpinned requests go to the stable version."""
        model = self.get(name)
        if CANARY not in model.routing.labels:
            raise NotFound(f"model {name!r} has no canary to roll back")
        return await self.remove_label(name, CANARY)

    # -- internals -----------------------------------------------------------------------

    def _serve(
        self, name: str, runtimes: dict[int, Runtime], memory: dict[int, int | None]
    ) -> ServedModel:
        policy = self._policy_for(name)
        model = ServedModel(
            name, policy, runtimes, self._routing(name), self._canary_percent, memory
        )
        model.reloader = ModelReloader(
            store=self.store,
            name=name,
            current=model.latest,
            install=lambda runtime: self._install(model, runtime),
            start=self._start,
            load=self._load,
            pinned=policy.pinned,
            retire_timeout=self._retire_timeout,
            on_retired=self._on_retired,
        )
        old = self._models.get(name)
        self._models = {**self._models, name: model}
        if old is not None and old.reloader is not None:
            asyncio.get_running_loop().create_task(old.reloader.close())
        if self._watch_interval > 0:
            model.reloader.watch(self._watch_interval)
        self._changed()
        log.info("serving %s versions %s (policy %s)", name, model.versions, policy)
        return model

    def _install(self, model: ServedModel, runtime: Runtime) -> list[Runtime]:
        dropped = model.install(runtime)
        self._changed()
        return dropped

    async def _load_versions(
        self, name: str, versions: Sequence[int]
    ) -> tuple[list[Classifier], dict[int, int | None]]:
        assert self._load is not None
        classifiers: list[Classifier] = []
        memory: dict[int, int | None] = {}
        for number in versions:
            version = ModelVersion(name, number, self.store / name / str(number))
            before = _rss_bytes()
            try:
                classifier = await asyncio.to_thread(self._load, version)
            except ServiceError as exc:
                raise ModelLoadFailed(f"{name} version {number}: {exc.message}") from exc
            after = _rss_bytes()
            classifiers.append(classifier)
            memory[number] = after - before if before and after else None
        return classifiers, memory

    def _routing(self, name: str) -> Routing:
        try:
            return model_store.read_routing(self.store, name)
        except ServiceError as exc:
            log.error("ignoring the labels of %s: %s", name, exc.message)
            return Routing()

    def _refresh_routing(self, model: ServedModel) -> None:
        model.routing = self._routing(model.name)

    async def _write(self, model: ServedModel, routing: Routing) -> ServedModel:
        await asyncio.to_thread(model_store.write_routing, self.store, model.name, routing)
        model.routing = routing
        log.info("%s labels now %s (canary %g%%)", model.name, routing.labels, model.canary_percent)
        return model

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux), to measure what loading a version costs."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
