"""The FastAPI application: routes, error mapping, and a lifespan that loads the models.

``create_app`` is cheap (no TensorFlow, no environment read); the lifespan does the heavy
work and the service answers ready only after the model reproduced its golden examples.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI
from pydantic import ValidationError

from service import model_store
from service.errors import ConfigurationError, NotFound, ServiceError
from service.model_store import ModelVersion
from service.serving.api import api_router
from service.serving.api.draining import start_draining
from service.serving.api.errors import install_error_handlers
from service.serving.api.middleware.admission import install_admission_control
from service.serving.api.middleware.limits import install_request_limits
from service.serving.api.middleware.observability import install_observability
from service.serving.api.state import AppState, app_state, install_state
from service.serving.api.v1.plain import PlainPredictRoute
from service.serving.capture import CaptureWriter
from service.serving.inference import heap
from service.serving.inference.classifier import Classifier, configure_tensorflow
from service.serving.inference.loading import load_verified
from service.serving.inference.registry import ModelRegistry
from service.serving.inference.reloader import LoadFn
from service.serving.inference.runtime import Runtime
from service.serving.logging_setup import configure_logging
from service.serving.metrics import BatchMetrics, DriftMetrics, publish_models
from service.serving.settings import Settings
from service.serving.ui import ui_router
from service.serving.worker_state import READY, WorkerGroup
from service.serving.worker_sync import GroupChanges

log = logging.getLogger("mmserve.app")


def create_app(
    settings: Settings | None = None,
    classifier: Classifier | None = None,
    *,
    classifiers: Sequence[Classifier] = (),
    loader: LoadFn | None = None,
    workers: WorkerGroup | None = None,
) -> FastAPI:
    """Build the application.

    ``settings`` default to the environment (read at start-up, not here). Without a
    ``classifier`` (or ``classifiers``, one per model) start-up loads the configured models
    from the store and verifies them; given ones (tests, custom runtimes) are served as
    they are. Newer versions in the store are loaded by ``loader`` (default: from the
    store, as at start-up); a given classifier is never replaced unless a ``loader`` is
    given too. ``workers``: this process is one of a group (:mod:`service.serving.workers`),
    which readiness then speaks for.
    """
    state = AppState(settings=settings, workers=workers)
    given = [classifier] if classifier is not None else list(classifiers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            active = settings if settings is not None else Settings()
        except ValidationError as exc:
            log.error("start-up failed: %s", exc)
            raise
        configure_logging(active.log_level, active.log_format)
        state.settings = active
        capture = await _start_capture(active, workers)
        changes = GroupChanges(workers, active.worker_sync_timeout_s)
        state.changes = changes
        generation, names = changes.models_at_start()
        try:
            registry = await _start_registry(active, given, loader, names, capture)
        except BaseException:
            if capture is not None:
                await asyncio.to_thread(capture.close, active.shutdown_timeout_s)
            raise
        state.registry = registry
        registry.watch(active.reload_poll_s)
        await changes.started(registry, generation)
        if active.gc_freeze:
            heap.freeze()
        for model in registry.models.values():
            log.info("ready: %s versions %s", model.name, model.versions)
        if workers is not None:
            workers.mark(READY)
        try:
            yield
        finally:
            start_draining(app)
            state.registry = None
            await registry.close()
            if capture is not None:  # after the last answer: what was sampled is written
                await asyncio.to_thread(capture.close, active.shutdown_timeout_s)
            # Not at start-up: a SIGTERM during loading must not be forgotten. Now nothing
            # is served, and a later start of the same app begins undrained.
            state.draining = False

    otel = settings.opentelemetry if settings is not None else _env_flag("MMSERVE_OPENTELEMETRY")
    app = FastAPI(
        title="mmserve",
        version=_version(),
        summary="Class probabilities for an image and its text.",
        lifespan=lifespan,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    install_state(app, state)
    install_error_handlers(app)
    install_request_limits(app)
    install_admission_control(app)  # before the body limit: refusals read no body
    install_observability(app)  # last: the outermost middleware
    app.include_router(api_router())
    app.router.routes.insert(0, PlainPredictRoute())  # before the FastAPI route it relieves
    app.include_router(ui_router())  # the page answers 404 when settings.ui is off
    return app


async def _start_capture(settings: Settings, workers: WorkerGroup | None) -> CaptureWriter | None:
    """The capture writer when ``capture_dir`` is set and ``capture_rate`` is above 0; an
    unusable folder fails start-up."""
    if settings.capture_dir is None or settings.capture_rate == 0:
        return None
    capture = CaptureWriter(
        settings.capture_dir,
        settings.capture_rate,
        settings.capture_max_bytes,
        settings.capture_segment_s,
        settings.capture_queue_bytes,
        worker=workers.index if workers is not None else 0,
        workers=workers.size if workers is not None else 1,
    )
    try:
        await asyncio.to_thread(capture.start)
    except OSError as exc:
        error = ConfigurationError(f"cannot capture to {settings.capture_dir}: {exc}")
        log.error("start-up failed: %s", error)
        raise error from exc
    log.info(
        "capturing %g of requests to %s (at most %d bytes)",
        settings.capture_rate,
        settings.capture_dir,
        settings.capture_max_bytes,
    )
    return capture


def _drift(classifier: Classifier) -> DriftMetrics:
    """The version's drift metrics, its test split's class counts as the reference."""
    counts = classifier.metadata.dataset.get("counts")
    test = counts.get("test") if isinstance(counts, dict) else None
    return DriftMetrics(
        classifier.name,
        classifier.version,
        classifier.labels,
        test if isinstance(test, dict) else None,
    )


async def _start_registry(
    settings: Settings,
    given: list[Classifier],
    loader: LoadFn | None,
    names: Sequence[str] | None = None,
    capture: CaptureWriter | None = None,
) -> ModelRegistry:
    """Load (or take) every configured model (``names``, when given: what the group of
    workers serves now); raise, after logging why, when one fails."""
    registry: ModelRegistry | None = None
    try:
        if given:
            load = loader
        else:
            device = await asyncio.to_thread(
                configure_tensorflow,
                settings.device,
                settings.intra_op_threads,
                settings.inter_op_threads,
            )
            load = _store_loader(settings, device)
        observer = BatchMetrics()
        registry = ModelRegistry(
            store=settings.model_store,
            default_name=settings.model_name,
            policy_for=settings.policy_for,
            start=lambda classifier: Runtime.start(
                classifier, settings, observer, _drift(classifier), capture
            ),
            load=load,
            canary_percent=settings.canary_percent,
            retire_timeout=settings.shutdown_timeout_s,
            on_change=lambda: _publish(registry),
            on_retired=heap.refreeze if settings.gc_freeze else None,
        )
        if given:
            registry.add(given)
            for model in given:
                log.info("serving the given classifier %s v%d", model.name, model.version)
        else:
            for name in names if names is not None else _configured_models(settings):
                await registry.load(name)
    except (ServiceError, ValidationError) as exc:
        log.error("start-up failed: %s", exc)
        if registry is not None:
            await registry.close()
        raise
    except Exception as exc:
        log.error("start-up failed: %s: %s", type(exc).__name__, exc)
        if registry is not None:
            await registry.close()
        raise
    return registry


def _configured_models(settings: Settings) -> list[str]:
    """The names to load at start-up: the list, or every model in the store for ``*``."""
    names = settings.model_names
    if names is not None:
        return list(names)
    found = model_store.list_models(settings.model_store)
    if not found:
        raise NotFound(f"MMSERVE_MODELS=* but the model store at {settings.model_store} is empty")
    return found


def _publish(registry: ModelRegistry | None) -> None:
    """``mmserve_model_info`` for every served version."""
    if registry is None:
        return
    publish_models(
        (name, version, runtime.classifier.device)
        for name, model in registry.models.items()
        for version, runtime in model.runtimes.items()
    )


def _store_loader(settings: Settings, device: str) -> LoadFn:
    """How a version is loaded, at start-up, at a hot reload and through the API: on the
    same device (TensorFlow's devices and threads are configured once per process)."""

    def load(version: ModelVersion) -> Classifier:
        return load_verified(
            version,
            device,
            warm_up_batch=settings.max_batch_size,
            golden_tolerance=settings.golden_tolerance,
            compile_text=settings.compile_text_encoder,
        )

    return load


def request_reload(app: FastAPI) -> None:
    """Re-read labels, check the store for newer model versions and, in a group of
    workers, follow what the group serves, now (SIGHUP); nothing before start-up or while
    draining."""
    state = app_state(app)
    if state.registry is not None and not state.draining:
        state.registry.reload_soon()
        state.changes.follow_soon(state.registry)


def _env_flag(name: str) -> bool:
    """A boolean setting read before the settings are (``uvicorn service.main:app``)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _version() -> str:
    try:
        return metadata.version("mmserve")
    except metadata.PackageNotFoundError:
        return "0.0.0"
