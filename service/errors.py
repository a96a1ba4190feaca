"""The service's exception hierarchy.

Every error a client can cause is a :class:`ServiceError` that knows its HTTP status and a
stable machine-readable code; the API maps it to ``{"error": {"code", "message"}}`` once.

    ServiceError
    ├── BadRequest (400)
    │   ├── InvalidImage (400)
    │   └── InvalidBase64 (400)
    ├── NotFound (404)
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── UnprocessableInput (422)
    │   └── TextTooLong (422)
    ├── ServiceUnavailable (503)
    │   └── QueueFull (503) -- the batcher's queue is full: retry after a moment
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


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class InvalidImage(BadRequest):
    """The bytes are not an image we can decode."""

    code = "invalid_image"


class InvalidBase64(BadRequest):
    """An image's ``b64`` field is not base64."""

    code = "invalid_base64"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


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


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(ServiceUnavailable):
    """The batcher's queue holds as many items as it may: the client should retry later."""

    code = "overloaded"


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
