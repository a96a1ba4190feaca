"""The I/O-free half of :mod:`service.client`, shared by the sync and async clients:
building requests, deciding retries, and turning responses into results or errors.

Importing this module is cheap (httpx and the standard library; PIL only when the caller
already holds a PIL image).
"""

from __future__ import annotations

import email.utils
import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import quote

import httpx

from service.client.types import APIError, ModelInfo, Prediction, TransportError, UnavailableError

if TYPE_CHECKING:
    from PIL import Image

ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | Image.Image"
"""A path to an image file, the file's bytes, or a PIL image."""

T = TypeVar("T")

# Connection failures (refused, reset, dropped by a server shutting down): safe to send
# again, since a prediction has no side effects. A read timeout is not among them: the server
# may still be working on the request, and its own deadline answers 504.
RETRYABLE_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class Request:
    """One HTTP call, independent of the client that sends it."""

    method: str
    path: str
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, Any] | None = None
    retry: bool = True


@dataclass(frozen=True)
class RetryPolicy:
    """Decides whether and how long to wait before sending a request again."""

    retries: int
    backoff: float
    max_wait: float

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff * 2**attempt, self.max_wait))

    def after_response(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to keep this response."""
        if response.status_code != 503 or attempt >= self.retries:
            return None
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if retry_after is None:
            return self._backoff(attempt)
        return min(retry_after, self.max_wait)

    def after_error(self, attempt: int, error: httpx.TransportError) -> float:
        """Seconds to wait before attempt ``attempt + 1``; raises when it should not retry."""
        if not isinstance(error, RETRYABLE_ERRORS) or attempt >= self.retries:
            raise TransportError(
                f"{type(error).__name__}: {error}", code="transport_error"
            ) from error
        return self._backoff(attempt)


NO_RETRY = RetryPolicy(retries=0, backoff=0.0, max_wait=0.0)


# -- request building (shared) -------------------------------------------------------------


def image_part(image: ImageInput) -> tuple[str, bytes, str]:
    """``(filename, bytes, content type)`` for an image; the service reads the format from
    the bytes, so the name and type are informative only."""
    if isinstance(image, bytes | bytearray):
        return ("image", bytes(image), "application/octet-stream")
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return (path.name, path.read_bytes(), "application/octet-stream")
    # Only a program that already imported PIL can hold a PIL image: never import it here.
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(image, pil.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return ("image.png", buffer.getvalue(), "image/png")
    raise TypeError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")


def _with_top_k(data: dict[str, Any], top_k: int | None) -> dict[str, Any]:
    if top_k is not None:
        data["top_k"] = str(top_k)
    return data


@dataclass(frozen=True)
class Target:
    """Which model answers: the default one, a model, one of its versions, or the version
    one of its labels points to (``version`` and ``label`` exclude each other)."""

    model: str | None = None
    version: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ValueError("give a version or a label, not both")
        if (self.version is not None or self.label is not None) and self.model is None:
            raise ValueError("a version or a label needs a model")

    def path(self, batch: bool) -> str:
        """The prediction route for this target."""
        suffix = "/predict/batch" if batch else "/predict"
        if self.model is None:
            return "/v1" + suffix
        base = f"/v1/models/{quote(self.model, safe='')}"
        if self.version is not None:
            base += f"/versions/{self.version}"
        elif self.label is not None:
            base += f"/labels/{quote(self.label, safe='')}"
        return base + suffix


DEFAULT_TARGET = Target()


def predict_request(
    image: ImageInput, text: str, top_k: int | None, target: Target = DEFAULT_TARGET
) -> Request:
    files = [("image", image_part(image))]
    data = _with_top_k({"text": text}, top_k)
    return Request("POST", target.path(batch=False), files=files, data=data)


def batch_request(
    items: Sequence[tuple[ImageInput, str]], top_k: int | None, target: Target = DEFAULT_TARGET
) -> Request:
    if not items:
        raise ValueError("predict_batch needs at least one (image, text) pair")
    # Repeated parts, paired by order: the i-th image goes with the i-th text.
    files = [("image", image_part(image)) for image, _ in items]
    data = _with_top_k({"text": [text for _, text in items]}, top_k)
    return Request("POST", target.path(batch=True), files=files, data=data)


def model_action(name: str, action: str) -> Request:
    """``POST /v1/models/{name}/{action}`` (load, unload, promote, rollback); never retried."""
    return Request("POST", f"/v1/models/{quote(name, safe='')}/{action}", retry=False)


# -- response parsing (shared) -------------------------------------------------------------


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def json_or_raise(response: httpx.Response) -> Any:
    """The JSON body of a successful response; a :class:`ClientError` for any other."""
    if response.is_success:
        try:
            return response.json()
        except ValueError as error:
            raise APIError(
                "the response is not JSON", status=response.status_code, code="invalid_response"
            ) from error
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        if response.text.strip():
            message = response.text.strip()[:200]
    error_type = UnavailableError if response.status_code == 503 else APIError
    raise error_type(message, status=response.status_code, code=code)


def _checked(parse: Callable[[Any], T], body: Any) -> T:
    try:
        return parse(body)
    except (KeyError, TypeError, ValueError) as error:
        raise APIError(
            f"unexpected response body: {error!r}", status=200, code="invalid_response"
        ) from error


def _prediction(model: str, version: int, result: dict[str, Any]) -> Prediction:
    pairs = [(str(p["label"]), float(p["probability"])) for p in result["predictions"]]
    pairs.sort(key=lambda pair: pair[1], reverse=True)
    return Prediction(model, version, str(result["label"]), dict(pairs))


def parse_prediction(body: Any) -> Prediction:
    return _checked(lambda b: _prediction(str(b["model"]), int(b["version"]), b), body)


def parse_batch(body: Any) -> list[Prediction]:
    def parse(b: Any) -> list[Prediction]:
        model, version = str(b["model"]), int(b["version"])
        return [_prediction(model, version, result) for result in b["results"]]

    return _checked(parse, body)


def parse_models(body: Any) -> list[ModelInfo]:
    def parse(b: Any) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=str(m["name"]),
                version=int(m["version"]),
                labels=tuple(str(label) for label in m["labels"]),
                versions=tuple(int(v) for v in m.get("versions") or [m["version"]]),
                version_labels={str(k): int(v) for k, v in (m.get("version_labels") or {}).items()},
                device=str(m.get("device", "")),
                metrics=dict(m.get("metrics") or {}),
                raw=dict(m),
            )
            for m in b["models"]
        ]

    return _checked(parse, body)
