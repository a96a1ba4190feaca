"""Python client for the mmserve REST API, sync (:class:`Client`) and async (:class:`AsyncClient`).

    with Client("http://localhost:8000") as client:
        prediction = client.predict("cat.jpg", "a cat on a sofa")
        print(prediction.label, prediction.probabilities)

Images may be a path, the file's bytes, or a ``PIL.Image.Image`` (sent as PNG). A 503 (not
ready, queue full, shutting down) and a failed connection are retried with exponential
backoff, honouring ``Retry-After``; a 4xx never is. Errors are :class:`ClientError`\\ s
carrying the service's status, code and message.

Both clients share everything but the I/O: requests are built, retries decided and
responses parsed in :mod:`service.client.core`. Importing this module is cheap (httpx, no
TensorFlow, no PIL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from service.client.core import (
    NO_RETRY,
    ImageInput,
    Request,
    RetryPolicy,
    Target,
    batch_request,
    json_or_raise,
    model_action,
    parse_batch,
    parse_models,
    parse_prediction,
    predict_request,
)
from service.client.types import (
    APIError,
    ClientError,
    Explanation,
    ModalityEffect,
    ModelInfo,
    Prediction,
    TransportError,
    UnavailableError,
)

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "ClientError",
    "Explanation",
    "ImageInput",
    "ModalityEffect",
    "ModelInfo",
    "Prediction",
    "TransportError",
    "UnavailableError",
]


class _Base:
    """Configuration shared by both clients."""

    def __init__(
        self, url: str, api_key: str | None, retries: int, backoff: float, max_wait: float
    ) -> None:
        if retries < 0 or backoff < 0 or max_wait < 0:
            raise ValueError("retries, backoff and max_wait must not be negative")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self._policy = RetryPolicy(retries, backoff, max_wait)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"  # never the API key

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "mmserve-client", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


class Client(_Base):
    """Synchronous client. Use as a context manager, or call :meth:`close`.

    ``retries`` is how many times a 503 or a failed connection is retried (0: never);
    waits grow as ``backoff * 2**n`` seconds, or follow ``Retry-After``, at most
    ``max_wait`` seconds each, then lengthened by a random 0-20% so that clients refused
    together do not come back together.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        *,
        max_wait: float = 30.0,
    ) -> None:
        super().__init__(url, api_key, retries, backoff, max_wait)
        self._http = httpx.Client(base_url=self.url, headers=self._headers(), timeout=timeout)

    def predict(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        top_k: int | None = None,
        *,
        model: str | None = None,
        version: int | None = None,
        label: str | None = None,
        explain: str | None = None,
    ) -> Prediction:
        """Class probabilities for one image+text pair (``POST /v1/predict``, or the route
        of ``model``, optionally one of its versions or labels). Either ``image`` or
        ``text`` may be None (the model's blank stands in), not both; ``explain="modality"``
        adds :attr:`Prediction.explanation` (three items' model cost)."""
        target = Target(model, version, label)
        return parse_prediction(self._call(predict_request(image, text, top_k, target, explain)))

    def predict_batch(
        self,
        items: Sequence[tuple[ImageInput | None, str | None]],
        top_k: int | None = None,
        *,
        model: str | None = None,
        version: int | None = None,
        label: str | None = None,
        explain: str | None = None,
    ) -> list[Prediction]:
        """One :class:`Prediction` per ``(image, text)`` pair, in order, from one request
        (either of a pair may be None, not both)."""
        target = Target(model, version, label)
        return parse_batch(self._call(batch_request(items, top_k, target, explain)))

    def load(self, name: str) -> dict[str, Any]:
        """Load a model of the store (``POST /v1/models/{name}/load``)."""
        return dict(self._call(model_action(name, "load")))

    def unload(self, name: str) -> dict[str, Any]:
        """Stop serving a model once its requests are answered."""
        return dict(self._call(model_action(name, "unload")))

    def models(self) -> list[ModelInfo]:
        """The served models (``GET /v1/models``)."""
        return parse_models(self._call(Request("GET", "/v1/models")))

    def health(self) -> bool:
        """Whether the process is up (``GET /health/live``); False when it cannot be reached."""
        return self._probe("/health/live")

    def ready(self) -> bool:
        """Whether the model is loaded and serving (``GET /health/ready``); never retried."""
        return self._probe("/health/ready")

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _probe(self, path: str) -> bool:
        try:
            return self._send(Request("GET", path, retry=False)).status_code == 200
        except TransportError:
            return False

    def _call(self, request: Request) -> Any:
        return json_or_raise(self._send(request))

    def _send(self, request: Request) -> httpx.Response:
        policy = self._policy if request.retry else NO_RETRY
        attempt = 0
        while True:
            try:
                response = self._http.request(request.method, request.path, **request.httpx_args())
            except httpx.TransportError as error:
                delay = policy.after_error(attempt, error)
            else:
                wait = policy.after_response(attempt, response)
                if wait is None:
                    return response
                delay = wait
            time.sleep(delay)
            attempt += 1


class AsyncClient(_Base):
    """Asynchronous client with the same methods as :class:`Client`, awaited.

    Use as an async context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        *,
        max_wait: float = 30.0,
    ) -> None:
        super().__init__(url, api_key, retries, backoff, max_wait)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers(), timeout=timeout)

    async def predict(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        top_k: int | None = None,
        *,
        model: str | None = None,
        version: int | None = None,
        label: str | None = None,
        explain: str | None = None,
    ) -> Prediction:
        """Class probabilities for one image+text pair (``POST /v1/predict``, or the route
        of ``model``, optionally one of its versions or labels). Either ``image`` or
        ``text`` may be None (the model's blank stands in), not both; ``explain="modality"``
        adds :attr:`Prediction.explanation` (three items' model cost)."""
        target = Target(model, version, label)
        return parse_prediction(
            await self._call(predict_request(image, text, top_k, target, explain))
        )

    async def predict_batch(
        self,
        items: Sequence[tuple[ImageInput | None, str | None]],
        top_k: int | None = None,
        *,
        model: str | None = None,
        version: int | None = None,
        label: str | None = None,
        explain: str | None = None,
    ) -> list[Prediction]:
        """One :class:`Prediction` per ``(image, text)`` pair, in order, from one request
        (either of a pair may be None, not both)."""
        target = Target(model, version, label)
        return parse_batch(await self._call(batch_request(items, top_k, target, explain)))

    async def load(self, name: str) -> dict[str, Any]:
        """Load a model of the store (``POST /v1/models/{name}/load``)."""
        return dict(await self._call(model_action(name, "load")))

    async def unload(self, name: str) -> dict[str, Any]:
        """Stop serving a model once its requests are answered."""
        return dict(await self._call(model_action(name, "unload")))

    async def models(self) -> list[ModelInfo]:
        """The served models (``GET /v1/models``)."""
        return parse_models(await self._call(Request("GET", "/v1/models")))

    async def health(self) -> bool:
        """Whether the process is up (``GET /health/live``); False when it cannot be reached."""
        return await self._probe("/health/live")

    async def ready(self) -> bool:
        """Whether the model is loaded and serving (``GET /health/ready``); never retried."""
        return await self._probe("/health/ready")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _probe(self, path: str) -> bool:
        try:
            return (await self._send(Request("GET", path, retry=False))).status_code == 200
        except TransportError:
            return False

    async def _call(self, request: Request) -> Any:
        return json_or_raise(await self._send(request))

    async def _send(self, request: Request) -> httpx.Response:
        policy = self._policy if request.retry else NO_RETRY
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    request.method, request.path, **request.httpx_args()
                )
            except httpx.TransportError as error:
                delay = policy.after_error(attempt, error)
            else:
                wait = policy.after_response(attempt, response)
                if wait is None:
                    return response
                delay = wait
            await asyncio.sleep(delay)
            attempt += 1
