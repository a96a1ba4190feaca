"""The FastAPI application: routes, error mapping, and a lifespan that loads the model.

``create_app`` is cheap (no TensorFlow, no environment read); the lifespan does the heavy
work and the service answers ready only after the model reproduced its golden examples.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI
from pydantic import ValidationError

from service import model_store
from service.errors import ServiceError
from service.model_store import ModelVersion
from service.serving.api import api_router
from service.serving.api.draining import is_draining, start_draining
from service.serving.api.errors import install_error_handlers
from service.serving.api.middleware.admission import install_admission_control
from service.serving.api.middleware.limits import install_request_limits
from service.serving.api.middleware.observability import install_observability
from service.serving.inference import heap
from service.serving.inference.classifier import Classifier, TFClassifier, configure_tensorflow
from service.serving.inference.loading import load_verified
from service.serving.inference.reloader import LoadFn, ModelReloader
from service.serving.inference.runtime import Runtime
from service.serving.logging_setup import configure_logging
from service.serving.metrics import BatchMetrics, publish_model
from service.serving.settings import Settings
from service.serving.worker_state import READY, WorkerGroup

log = logging.getLogger("mmserve.app")


def create_app(
    settings: Settings | None = None,
    classifier: Classifier | None = None,
    *,
    loader: LoadFn | None = None,
    workers: WorkerGroup | None = None,
) -> FastAPI:
    """Build the application.

    ``settings`` default to the environment (read at start-up, not here). Without a
    ``classifier`` start-up loads the configured model from the store and verifies it;
    with one (tests, custom runtimes) it is served as is. Newer versions in the store are
    loaded by ``loader`` (default: from the store, as at start-up); a given classifier is
    never replaced unless a ``loader`` is given too. ``workers``: this process is one of a
    group (:mod:`service.serving.workers`), which readiness then speaks for.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            active = settings if settings is not None else Settings()
            configure_logging(active.log_level, active.log_format)
            app.state.settings = active
            if classifier is None:
                model: Classifier = await asyncio.to_thread(load_classifier, active)
            else:
                model = classifier
                log.info("serving the given classifier %s v%d", model.name, model.version)
        except (ServiceError, ValidationError) as exc:
            log.error("start-up failed: %s", exc)
            raise
        except Exception as exc:
            log.error("start-up failed: %s: %s", type(exc).__name__, exc)
            raise
        observer = BatchMetrics()
        app.state.runtime = Runtime.start(model, active, observer)
        publish_model(model.name, model.version, model.device)
        load = loader if classifier is not None else _store_loader(active, model.device)
        reloader = app.state.reloader = _reloader(app, active, observer, load)
        reloader.watch(active.reload_poll_s)
        if active.gc_freeze:
            heap.freeze()
        log.info("ready: %s version %d on %s", model.name, model.version, model.device)
        if workers is not None:
            workers.mark(READY)
        try:
            yield
        finally:
            start_draining(app)
            app.state.reloader = None
            await reloader.close()
            # The runtime served now, which a hot reload may have swapped in.
            runtime = app.state.runtime
            app.state.runtime = None
            await runtime.close()
            # Not at start-up: a SIGTERM during loading must not be forgotten. Now nothing
            # is served, and a later start of the same app begins undrained.
            app.state.draining = False

    otel = settings.opentelemetry if settings is not None else _env_flag("MMSERVE_OPENTELEMETRY")
    app = FastAPI(
        title="mmserve",
        version=_version(),
        summary="Class probabilities for an image and its text.",
        lifespan=lifespan,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.reloader = None
    app.state.workers = workers
    install_error_handlers(app)
    install_request_limits(app)
    install_admission_control(app)  # before the body limit: refusals read no body
    install_observability(app)  # last: the outermost middleware
    app.include_router(api_router())
    return app


def load_classifier(settings: Settings) -> TFClassifier:
    """Load the configured model version on its device, warm it up and verify its golden
    examples; raise :class:`~service.errors.ServiceError` when any step fails."""
    version = model_store.resolve(settings.model_store, settings.model_name, settings.model_version)
    device = configure_tensorflow(
        settings.device, settings.intra_op_threads, settings.inter_op_threads
    )
    return load_verified(
        version,
        device,
        warm_up_batch=settings.max_batch_size,
        golden_tolerance=settings.golden_tolerance,
    )


def _store_loader(settings: Settings, device: str) -> LoadFn:
    """How a hot reload loads a newer version: exactly as start-up did, on the same device
    (TensorFlow's devices and threads are configured once per process)."""

    def load(version: ModelVersion) -> Classifier:
        return load_verified(
            version,
            device,
            warm_up_batch=settings.max_batch_size,
            golden_tolerance=settings.golden_tolerance,
        )

    return load


def _reloader(
    app: FastAPI, settings: Settings, observer: BatchMetrics, load: LoadFn | None
) -> ModelReloader:
    """The reloader, swapping ``app.state.runtime`` (what requests take) in one assignment."""

    def install(runtime: Runtime) -> None:
        app.state.runtime = runtime
        model = runtime.classifier
        publish_model(model.name, model.version, model.device)

    return ModelReloader(
        store=settings.model_store,
        name=settings.model_name,
        current=lambda: app.state.runtime,
        install=install,
        start=lambda classifier: Runtime.start(classifier, settings, observer),
        load=load,
        pinned=settings.model_version is not None,
        retire_timeout=settings.shutdown_timeout_s,
        on_retired=heap.refreeze if settings.gc_freeze else None,
    )


def request_reload(app: FastAPI) -> None:
    """Check the store for a newer model version now (SIGHUP); nothing before start-up or
    while draining."""
    reloader = app.state.reloader
    if isinstance(reloader, ModelReloader) and not is_draining(app):
        reloader.reload_soon()


def _env_flag(name: str) -> bool:
    """A boolean setting read before the settings are (``uvicorn service.main:app``)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _version() -> str:
    try:
        return metadata.version("mmserve")
    except metadata.PackageNotFoundError:
        return "0.0.0"
