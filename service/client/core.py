"""The I/O-free half of :mod:`service.client`, shared by the sync and async clients:
building requests, deciding retries, and turning responses into results or errors.

Importing this module is cheap (httpx and the standard library; PIL only when the caller
already holds a PIL image).
"""

from __future__ import annotations

import base64
import email.utils
import io
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import quote

import httpx

from service.client.types import (
    APIError,
    Explanation,
    ModalityEffect,
    ModelInfo,
    Prediction,
    TransportError,
    UnavailableError,
)

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
    files: list[tuple[str, tuple[str | None, bytes, str]]] | None = None
    data: dict[str, Any] | None = None
    retry: bool = True
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None

    def httpx_args(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` / ``AsyncClient.request``."""
        return {"files": self.files, "data": self.data, "json": self.json, "params": self.params}


JITTER = 0.2
"""Every wait is lengthened by a random share of itself, up to this: clients refused
together (a burst, an overload) then come back spread out instead of together."""


@dataclass(frozen=True)
class RetryPolicy:
    """Decides whether and how long to wait before sending a request again."""

    retries: int
    backoff: float
    max_wait: float
    jitter: float = JITTER

    def _backoff(self, attempt: int) -> float:
        return self.spread(min(self.backoff * 2**attempt, self.max_wait))

    def spread(self, seconds: float) -> float:
        """``seconds`` lengthened by a random 0 to ``jitter`` share of it (never shortened:
        a server's ``Retry-After`` is the least it asked for)."""
        return float(seconds * (1 + self.jitter * random.random()))

    def after_response(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to keep this response."""
        if response.status_code != 503 or attempt >= self.retries:
            return None
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if retry_after is None:
            return self._backoff(attempt)
        return self.spread(min(retry_after, self.max_wait))

    def after_error(self, attempt: int, error: httpx.TransportError) -> float:
        """Seconds to wait before attempt ``attempt + 1``; raises when it should not retry."""
        if not isinstance(error, RETRYABLE_ERRORS) or attempt >= self.retries:
            raise TransportError(
                f"{type(error).__name__}: {error}", code="transport_error"
            ) from error
        return self._backoff(attempt)


NO_RETRY = RetryPolicy(retries=0, backoff=0.0, max_wait=0.0, jitter=0.0)


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


EXPLAIN = ("modality",)
"""The ``explain`` values the service accepts."""


def _explain_params(explain: str | None) -> dict[str, str] | None:
    if explain is None:
        return None
    if explain not in EXPLAIN:
        raise ValueError(f"explain must be one of {EXPLAIN}, not {explain!r}")
    return {"explain": explain}


def _check_item(image: ImageInput | None, text: str | None, where: str = "") -> None:
    if image is None and not text:
        raise ValueError(f"{where}give an image, a text or both (an empty text is no text)")


def predict_request(
    image: ImageInput | None,
    text: str | None,
    top_k: int | None,
    target: Target = DEFAULT_TARGET,
    explain: str | None = None,
) -> Request:
    """One pair; a missing image or text is left out of the form (the model's blank
    stands in)."""
    _check_item(image, text)
    if image is None:
        # The text as a part without a file name (a form field): httpx sends a form as
        # multipart only when it has a file part, and the route reads multipart only.
        assert text is not None
        part = (None, text.encode("utf-8"), "text/plain; charset=utf-8")
        files: list[tuple[str, tuple[str | None, bytes, str]]] = [("text", part)]
        data = _with_top_k({}, top_k)
    else:
        files = [("image", image_part(image))]
        data = _with_top_k({} if text is None else {"text": text}, top_k)
    path = target.path(batch=False)
    return Request("POST", path, files=files, data=data, params=_explain_params(explain))


def batch_request(
    items: Sequence[tuple[ImageInput | None, str | None]],
    top_k: int | None,
    target: Target = DEFAULT_TARGET,
    explain: str | None = None,
) -> Request:
    """Multipart parts paired by order; a JSON batch when some items miss their image
    (multipart cannot leave one image out of the pairing)."""
    if not items:
        raise ValueError("predict_batch needs at least one (image, text) pair")
    for i, (image, text) in enumerate(items):
        _check_item(image, text, f"item {i}: ")
    path, params = target.path(batch=True), _explain_params(explain)
    if any(image is None for image, _ in items):
        instances = [_instance(image, text) for image, text in items]
        body: dict[str, Any] = {"instances": instances}
        if top_k is not None:
            body["top_k"] = top_k
        return Request("POST", path, json=body, params=params)
    # Repeated parts, paired by order: the i-th image goes with the i-th text.
    files: list[tuple[str, tuple[str | None, bytes, str]]] = [
        ("image", image_part(image)) for image, _ in items if image is not None
    ]
    data = _with_top_k({"text": [text or "" for _, text in items]}, top_k)
    return Request("POST", path, files=files, data=data, params=params)


def _instance(image: ImageInput | None, text: str | None) -> dict[str, Any]:
    instance: dict[str, Any] = {}
    if image is not None:
        instance["image"] = {"b64": base64.b64encode(image_part(image)[1]).decode("ascii")}
    if text is not None:
        instance["text"] = text
    return instance


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


def _ranked(result: dict[str, Any]) -> dict[str, float]:
    pairs = [(str(p["label"]), float(p["probability"])) for p in result["predictions"]]
    pairs.sort(key=lambda pair: pair[1], reverse=True)
    return dict(pairs)


def _effect(body: dict[str, Any]) -> ModalityEffect:
    return ModalityEffect(
        str(body["label"]), float(body["probability_change"]), bool(body["top_class_changes"])
    )


def _explanation(body: dict[str, Any] | None) -> Explanation | None:
    if body is None:
        return None
    return Explanation(
        full=_ranked(body["full"]),
        image_only=_ranked(body["image_only"]),
        text_only=_ranked(body["text_only"]),
        without_image=_effect(body["without_image"]),
        without_text=_effect(body["without_text"]),
        raw=body,
    )


def _prediction(
    model: str, version: int, result: dict[str, Any], warnings: list[str] | None
) -> Prediction:
    modalities = result.get("modalities")
    return Prediction(
        model,
        version,
        str(result["label"]),
        _ranked(result),
        modalities=None if modalities is None else str(modalities),
        warnings=None if warnings is None else tuple(str(w) for w in warnings),
        explanation=_explanation(result.get("explanation")),
    )


def parse_prediction(body: Any) -> Prediction:
    return _checked(
        lambda b: _prediction(str(b["model"]), int(b["version"]), b, b.get("warnings")), body
    )


def parse_batch(body: Any) -> list[Prediction]:
    """One prediction per result; each carries the response's warnings (they are the
    batch's, not one item's)."""

    def parse(b: Any) -> list[Prediction]:
        model, version, warnings = str(b["model"]), int(b["version"]), b.get("warnings")
        return [_prediction(model, version, result, warnings) for result in b["results"]]

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
