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
class ModalityEffect:
    """What removing one modality does to the answer for the full input."""

    label: str
    """The most probable class without the modality."""
    probability_change: float
    """The full input's top class: its probability without the modality minus with it."""
    top_class_changes: bool
    """Whether the most probable class without the modality is another one."""


@dataclass(frozen=True)
class Explanation:
    """``explain="modality"``: the answer as sent, from the image alone (text blanked) and
    from the text alone (image blanked), each label -> probability, highest first."""

    full: Mapping[str, float] = field(hash=False)
    image_only: Mapping[str, float] = field(hash=False)
    text_only: Mapping[str, float] = field(hash=False)
    without_image: ModalityEffect
    without_text: ModalityEffect
    raw: Mapping[str, Any] = field(hash=False, repr=False)
    """The service's JSON for it."""


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one image+text pair (or an image or a text alone).

    ``probabilities`` maps label to probability, highest first (iteration order), so
    ``next(iter(p.probabilities))`` is ``p.label``. ``modalities`` is what the request sent
    (``"image+text"``, ``"image"`` or ``"text"``; None from a server that does not say),
    ``warnings`` what the service had to say about the answer (e.g. a one-modality request
    to a model trained without modality dropout), ``explanation`` present when asked for.
    """

    model: str
    version: int
    label: str
    probabilities: Mapping[str, float] = field(hash=False)
    modalities: str | None = None
    warnings: tuple[str, ...] | None = None
    explanation: Explanation | None = field(default=None, hash=False)

    @property
    def ranked(self) -> list[tuple[str, float]]:
        """``(label, probability)`` pairs, highest first."""
        return list(self.probabilities.items())

    def to_dict(self) -> dict[str, Any]:
        """The service's JSON shape: ``{"model","version","label","predictions":[...]}``."""
        out: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "label": self.label,
            "predictions": [{"label": k, "probability": v} for k, v in self.ranked],
        }
        if self.modalities is not None:
            out["modalities"] = self.modalities
        if self.warnings is not None:
            out["warnings"] = list(self.warnings)
        if self.explanation is not None:
            out["explanation"] = dict(self.explanation.raw)
        return out


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
