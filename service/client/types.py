"""What :mod:`service.client` returns and raises: typed results and the error hierarchy.

    ClientError -- status, code and message
    ├── APIError -- the service answered with an error status (``{"error": {...}}`` body)
    │   └── UnavailableError (503) -- still unavailable after every retry
    └── TransportError -- no answer: connection refused, reset, timed out (status None)

Importing this module is cheap: the standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ClientError(Exception):
    """A request that did not produce a result: ``status`` (None without an HTTP answer),
    the service's stable ``code`` and its ``message``."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        super().__init__(f"{status} {code}: {message}" if status is not None else message)
        self.status = status
        self.code = code
        self.message = message


class APIError(ClientError):
    """The service answered with an error status (4xx or 5xx)."""


class UnavailableError(APIError):
    """The service answered 503 (not ready, overloaded or shutting down) on every attempt."""


class TransportError(ClientError):
    """No HTTP answer: the connection was refused, reset or timed out."""


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one image+text pair.

    ``probabilities`` maps label to probability, highest first (iteration order), so
    ``next(iter(p.probabilities))`` is ``p.label``.
    """

    model: str
    version: int
    label: str
    probabilities: Mapping[str, float] = field(hash=False)

    @property
    def ranked(self) -> list[tuple[str, float]]:
        """``(label, probability)`` pairs, highest first."""
        return list(self.probabilities.items())

    def to_dict(self) -> dict[str, Any]:
        """The service's JSON shape: ``{"model","version","label","predictions":[...]}``."""
        return {
            "model": self.model,
            "version": self.version,
            "label": self.label,
            "predictions": [{"label": k, "probability": v} for k, v in self.ranked],
        }


@dataclass(frozen=True)
class ModelInfo:
    """One served model, as ``GET /v1/models`` describes it."""

    name: str
    version: int
    """The version unpinned requests get (outside a canary share)."""
    labels: tuple[str, ...]
    """Class names, in output order."""
    device: str
    metrics: Mapping[str, Any] = field(hash=False)
    raw: Mapping[str, Any] = field(hash=False, repr=False)
    versions: tuple[int, ...] = ()
    """Every served version."""
    version_labels: Mapping[str, int] = field(default_factory=dict, hash=False)
    """Labels (``stable``, ``canary``) and the versions they point to."""
