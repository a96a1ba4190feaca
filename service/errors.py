"""The service's exception hierarchy.

Every error a client can cause is a :class:`ServiceError` that knows its HTTP status and a
stable machine-readable code; the API maps it to ``{"error": {"code", "message"}}`` once.

    ServiceError
    ├── BadRequest (400)
    │   ├── InvalidImage (400)
    │   └── InvalidBase64 (400)
    ├── Unauthorized (401) -- API keys are configured and the request has none that matches
    ├── Forbidden (403) -- a valid API key, but the route needs an admin key
    ├── NotFound (404)
    ├── RequestTimeout (408) -- the headers or body did not arrive within their deadline
    ├── ReloadRejected (409) -- no newer model version can be served; the old one stays
    ├── ModelLoadFailed (409) -- a model asked for through the API cannot be loaded
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── UnprocessableInput (422)
    │   ├── TextTooLong (422)
    │   ├── MissingModalities (422) -- an item with neither an image nor a text
    │   └── UnpairedParts (422) -- a multipart batch with unequal numbers of images and texts
    ├── ServiceUnavailable (503)
    │   ├── Overloaded (503) -- too many requests in flight: retry after a moment
    │   │   └── QueueFull (503) -- the batcher's queue is full
    │   └── ShuttingDown (503) -- the process is draining before it exits
    ├── DeadlineExceeded (504) -- the request waited longer than its deadline
    ├── ArtifactError (500) -- a model version that cannot be loaded or verified
    └── ConfigurationError (500) -- settings that cannot work on this machine
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an error with an HTTP status and a stable code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the error response carries besides the JSON body."""
        return {}


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class InvalidImage(BadRequest):
    """The bytes are not an image we can decode."""

    code = "invalid_image"


class InvalidBase64(BadRequest):
    """An image's ``b64`` field is not base64."""

    code = "invalid_base64"


class Unauthorized(ServiceError):
    """The request carries no valid API key. The message never says what was wrong with it."""

    status_code = 401
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        # RFC 9110 requires a challenge on every 401.
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    """The request carries a valid API key, but the route changes what the service serves
    and admin keys are configured: it needs one of those."""

    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class RequestTimeout(ServiceError):
    """The client did not send its request's headers or body within the deadline."""

    status_code = 408
    code = "request_timeout"


class ReloadRejected(ServiceError):
    """A reload found newer model versions but none loads and verifies; the served one stays."""

    status_code = 409
    code = "reload_rejected"


class ModelLoadFailed(ServiceError):
    """A model the repository API was asked to load fails to load or verify (or cannot be
    loaded here); what is served is unchanged."""

    status_code = 409
    code = "load_failed"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class UnprocessableInput(ServiceError):
    status_code = 422
    code = "unprocessable_input"


class TextTooLong(UnprocessableInput):
    """A text is longer than ``max_text_chars``."""

    code = "text_too_long"


class MissingModalities(UnprocessableInput):
    """An item with neither an image nor a text (an empty text counts as none): one of the
    two may be omitted, never both."""

    code = "missing_modalities"


class UnpairedParts(UnprocessableInput):
    """A multipart body whose ``image`` and ``text`` parts differ in number (its own code:
    the OpenAPI schema cannot say that two arrays must be equally long)."""

    code = "unpaired_parts"


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "unavailable"
    refusal_reason = "unavailable"
    """Why the request was refused, as ``mmserve_requests_refused_total`` counts it."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class Overloaded(ServiceUnavailable):
    """The service is at a capacity limit: the client should retry later."""

    code = "overloaded"
    refusal_reason = "in_flight"


class QueueFull(Overloaded):
    """The batcher's queue holds as many items as it may."""

    refusal_reason = "queue_full"


class ShuttingDown(ServiceUnavailable):
    """The process received SIGTERM: requests in flight finish, new ones go elsewhere."""

    code = "shutting_down"
    refusal_reason = "draining"


class DeadlineExceeded(ServiceError):
    """The request was not answered within its deadline."""

    status_code = 504
    code = "deadline_exceeded"


class ArtifactError(ServiceError):
    """A model artifact is missing, corrupt, or does not reproduce its golden examples."""

    code = "artifact_error"


class ConfigurationError(ServiceError):
    """The settings ask for something this machine cannot do (a GPU where none is visible)."""

    code = "configuration_error"
