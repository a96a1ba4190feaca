"""The FastAPI application: routes, error mapping, and a lifespan that loads the model.

``create_app`` is cheap (no TensorFlow, no environment read); the lifespan does the heavy
work and the service answers ready only after the model reproduced its golden examples.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI
from pydantic import ValidationError

from service import model_store
from service.api import api_router
from service.api.errors import install_error_handlers
from service.errors import ServiceError
from service.inference.classifier import Classifier, TFClassifier, configure_tensorflow
from service.inference.golden import verify_golden
from service.inference.runtime import Runtime
from service.logging_setup import configure_logging
from service.metrics import BatchMetrics
from service.settings import Settings

log = logging.getLogger("mmserve.app")


def create_app(settings: Settings | None = None, classifier: Classifier | None = None) -> FastAPI:
    """Build the application.

    ``settings`` default to the environment (read at start-up, not here). Without a
    ``classifier`` start-up loads the configured model from the store and verifies it;
    with one (tests, custom runtimes) it is served as is.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            active = settings if settings is not None else Settings()
            configure_logging(active.log_level)
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
        runtime = Runtime.start(model, active, BatchMetrics())
        app.state.runtime = runtime
        log.info("ready: %s version %d on %s", model.name, model.version, model.device)
        try:
            yield
        finally:
            app.state.runtime = None
            await runtime.close()

    app = FastAPI(
        title="mmserve",
        version=_version(),
        summary="Class probabilities for an image and its text.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = None
    install_error_handlers(app)
    app.include_router(api_router())
    return app


def load_classifier(settings: Settings) -> TFClassifier:
    """Load the configured model version on its device, warm it up and verify its golden
    examples; raise :class:`~service.errors.ServiceError` when any step fails."""
    version = model_store.resolve(settings.model_store, settings.model_name, settings.model_version)
    device = configure_tensorflow(
        settings.device, settings.intra_op_threads, settings.inter_op_threads
    )
    log.info(
        "loading %s version %d from %s on %s", version.name, version.version, version.path, device
    )
    classifier = TFClassifier(version, device)
    classifier.warm_up((1, settings.max_batch_size))
    report = verify_golden(classifier, version, settings.golden_tolerance)
    log.info(
        "golden check passed: %d examples reproduce training within %.1e (tolerance %.0e)",
        report.examples,
        report.max_abs_diff,
        report.tolerance,
    )
    return classifier


def _version() -> str:
    try:
        return metadata.version("mmserve")
    except metadata.PackageNotFoundError:
        return "0.0.0"
