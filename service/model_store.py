"""The model store: artifact layout, metadata schema, version resolution, atomic writes.

Layout (integer versions, highest = latest, as in TF Serving and Triton)::

    <root>/<name>/<version>/
        model.keras            named inputs image [N,H,W,3] float32 0..255, text [N,1] string
        metadata.json          ModelMetadata below
        evaluation.json        per-class report, confusion matrix, ablation
        confusion_matrix.png
        training_curves.png    loss and accuracy per epoch, the early-stopping point marked
        golden/golden.json     GoldenSet: inputs (files beside it) + the probabilities
        golden/<files>         training saw for them
        saved_model/           SavedModel export (serving_default signature), for TF Serving
    <root>/<name>/labels.json  Routing: labels (``stable``, ``canary``) -> versions and the
                               share of unpinned requests the canary takes (optional)

A version is built in a hidden staging folder and renamed into place, so a reader never
sees half a version. This module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import ArtifactError, NotFound

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
EVALUATION_FILE = "evaluation.json"
CONFUSION_PLOT = "confusion_matrix.png"
CURVES_PLOT = "training_curves.png"
SAVED_MODEL_DIR = "saved_model"
GOLDEN_DIR = "golden"
GOLDEN_INDEX = "golden.json"

LABELS_FILE = "labels.json"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class ModelMetadata(BaseModel):
    """``metadata.json``: read by people and tools; these keys are stable."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int = Field(ge=0)
    labels: list[str] = Field(min_length=2)
    image_size: tuple[int, int]
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    framework: dict[str, str] = Field(default_factory=dict)
    created_at: str


class GoldenExample(BaseModel):
    """One input with the probabilities the trained model gave it at training time."""

    image: str | None = Field(description="File name inside golden/, or null for no image")
    text: str
    label: str = Field(description="The true label")
    probabilities: list[float]


class GoldenSet(BaseModel):
    examples: list[GoldenExample]


@dataclass(frozen=True)
class ModelVersion:
    """A resolved version folder of one model."""

    name: str
    version: int
    path: Path

    @property
    def golden_dir(self) -> Path:
        return self.path / GOLDEN_DIR


def validate_name(name: str) -> str:
    """Model names become folder names: letters, digits, '.', '_' and '-' only."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


def list_models(root: Path) -> list[str]:
    """Names of the models in the store that have at least one version."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and list_versions(root, p.name))


def list_versions(root: Path, name: str) -> list[int]:
    """The model's published versions, ascending. Staging folders are never listed."""
    folder = root / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def resolve(root: Path, name: str, version: int | None = None) -> ModelVersion:
    """The requested version, or the latest one when ``version`` is None."""
    versions = list_versions(root, name)
    if not versions:
        raise NotFound(f"model {name!r} has no versions in the model store at {root}")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise NotFound(f"model {name!r} has no version {version} (available: {versions})")
    return ModelVersion(name=name, version=version, path=root / name / str(version))


def load_metadata(path: Path) -> ModelMetadata:
    """Read and validate ``metadata.json`` in a version folder."""
    file = path / METADATA_FILE
    try:
        return ModelMetadata.model_validate_json(file.read_bytes())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{file} is missing") from exc
    except ValidationError as exc:
        raise ArtifactError(f"{file} is not valid model metadata: {exc}") from exc


def load_golden(path: Path) -> GoldenSet:
    """Read ``golden/golden.json`` in a version folder."""
    file = path / GOLDEN_DIR / GOLDEN_INDEX
    try:
        return GoldenSet.model_validate_json(file.read_bytes())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{file} is missing") from exc
    except ValidationError as exc:
        raise ArtifactError(f"{file} is not a valid golden set: {exc}") from exc


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so the file is never half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def staging(root: Path, name: str) -> Iterator[Path]:
    """A hidden folder to build a new version in; removed if the build fails.

    Publish it with :func:`publish` inside the ``with`` block.
    """
    folder = root / validate_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(root: Path, name: str, staged: Path) -> ModelVersion:
    """Give a staged folder the next version number and rename it into place.

    A lock on the model folder makes concurrent trainers take distinct versions. The
    ``version`` field of the staged ``metadata.json`` is set to the number assigned.
    """
    folder = root / name
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        versions = list_versions(root, name)
        version = (versions[-1] + 1) if versions else 1
        meta_file = staged / METADATA_FILE
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        meta["version"] = version
        write_json(meta_file, meta)
        target = folder / str(version)
        os.rename(staged, target)
    return ModelVersion(name=name, version=version, path=target)


class Routing(BaseModel):
    """``<name>/labels.json``: which versions the labels point to, and the share of a
    model's unpinned requests its ``canary`` version answers (None: the service's
    ``canary_percent``)."""

    labels: dict[str, int] = Field(default_factory=dict)
    canary_percent: float | None = Field(None, ge=0, le=100)


def validate_label(label: str) -> str:
    """Labels are lower-case words: ``stable``, ``canary``, ``eu-prod``."""
    if not _LABEL_RE.match(label):
        raise ValueError(
            f"invalid label {label!r}: use lower-case letters, digits, '_' and '-', "
            "starting with a letter (at most 64 characters)"
        )
    return label


def read_routing(root: Path, name: str) -> Routing:
    """The model's labels file, or empty routing when it has none."""
    file = root / name / LABELS_FILE
    try:
        return Routing.model_validate_json(file.read_bytes())
    except FileNotFoundError:
        return Routing()
    except ValidationError as exc:
        raise ArtifactError(f"{file} is not a valid labels file: {exc}") from exc


def write_routing(root: Path, name: str, routing: Routing) -> None:
    """Replace the model's labels file atomically (temporary file, then rename), under the
    model folder's lock, so concurrent writers and readers never see half a file."""
    folder = root / validate_name(name)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_json(folder / LABELS_FILE, routing.model_dump(exclude_none=True))
