"""Request and response bodies of the REST API, with the examples OpenAPI shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema


class ClassProbability(BaseModel):
    """One class and its probability."""

    label: str
    probability: float = Field(ge=0, le=1)


Modalities = Literal["image+text", "image", "text"]
"""What an item sent; the missing modality (if any) was replaced by the model's blank."""

_MODALITIES = (
    "What the request sent: 'image+text', 'image' (the text missing or empty) or 'text' (the "
    "image missing); the model's trained blank stood in for a missing modality."
)
_WARNINGS = (
    "Warnings about the answer, e.g. one-modality items answered by a model trained without "
    "modality dropout (empty when there is nothing to say)."
)


class Ranked(BaseModel):
    """Every class (or the top_k) with its probability, highest first."""

    label: str = Field(description="The most probable class.")
    predictions: list[ClassProbability] = Field(
        description="Every class (or the top_k), by probability, highest first."
    )


class ModalityEffect(BaseModel):
    """What removing one modality does to the answer for the full input."""

    label: str = Field(description="The most probable class without the modality.")
    probability_change: float = Field(
        description="The full input's top class: its probability without the modality minus "
        "its probability with it (negative: the modality supported the answer)."
    )
    top_class_changes: bool = Field(
        description="Whether the most probable class without the modality is another one."
    )


class Explanation(BaseModel):
    """``explain=modality``: the item as sent, with its text blanked and with its image
    blanked, scored together in one model call (three items' cost), and what removing each
    modality changes. The predictions list every class, whatever ``top_k`` says."""

    full: Ranked = Field(description="The item as sent (the same answer as the response's).")
    image_only: Ranked = Field(description="The image alone: the text replaced by the blank.")
    text_only: Ranked = Field(description="The text alone: the image replaced by the blank.")
    without_image: ModalityEffect = Field(description="Removing the image (= text_only).")
    without_text: ModalityEffect = Field(description="Removing the text (= image_only).")


class PredictResponse(BaseModel):
    """Class probabilities for one image+text pair, most probable first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "demo",
                    "version": 1,
                    "label": "cat",
                    "predictions": [
                        {"label": "cat", "probability": 0.91},
                        {"label": "dog", "probability": 0.07},
                        {"label": "bird", "probability": 0.02},
                    ],
                    "modalities": "image+text",
                    "warnings": [],
                }
            ]
        }
    )

    model: str = Field(description="Name of the model that answered.")
    version: int = Field(description="Version of the model that answered.")
    label: str = Field(description="The most probable class.")
    predictions: list[ClassProbability] = Field(
        description="Every class (or the top_k), by probability, highest first."
    )
    modalities: Modalities = Field(description=_MODALITIES)
    warnings: list[str] = Field(default_factory=list, description=_WARNINGS)
    explanation: Explanation | None = Field(
        None, description="Only with explain=modality: the answer by modality."
    )


class BatchResult(Ranked):
    """The answer for one pair of a batch."""

    modalities: Modalities = Field(description=_MODALITIES)
    explanation: Explanation | None = Field(
        None, description="Only with explain=modality: the answer by modality."
    )


class BatchPredictResponse(BaseModel):
    """One result per pair, in request order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "demo",
                    "version": 1,
                    "results": [
                        {
                            "label": "cat",
                            "predictions": [{"label": "cat", "probability": 0.91}],
                            "modalities": "image+text",
                        },
                        {
                            "label": "dog",
                            "predictions": [{"label": "dog", "probability": 0.84}],
                            "modalities": "text",
                        },
                    ],
                    "warnings": [],
                }
            ]
        }
    )

    model: str
    version: int
    results: list[BatchResult]
    warnings: list[str] = Field(default_factory=list, description=_WARNINGS)


class B64Image(BaseModel):
    """Image file bytes in base64 (TF Serving's ``{"b64": ...}`` convention)."""

    b64: str = Field(description="The encoded image file (JPEG, PNG, ...) in base64.")


# "Either modality, not neither" in JSON Schema, so that schema-driven clients and tests
# know an empty item is refused (422 missing_modalities).
_SOME_TEXT: JsonDict = {"type": "string", "minLength": 1}


class BatchInstance(BaseModel):
    """One image+text pair of a JSON batch: either may be omitted (or null), not both."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["image"], "properties": {"image": {"type": "object"}}},
                {"required": ["text"], "properties": {"text": _SOME_TEXT}},
            ]
        }
    )

    image: B64Image | None = Field(None, description="Omitted or null: no image.")
    text: str | None = Field(None, description="Omitted, null or '': no text.")


# Whole 1x1 PNGs, so the documented example is a request the service answers with 200.
_RED_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mN4JiICAALyAQ9Lv94OAAAAAElFTkSuQmCC"
)
_BLUE_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mMQEXkGAAFOAQ9HvvAXAAAAAElFTkSuQmCC"
)


class BatchRequest(BaseModel):
    """A JSON batch: image+text pairs answered in order."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "instances": [
                        {"image": {"b64": _RED_PIXEL_PNG}, "text": "a red dot"},
                        {"image": {"b64": _BLUE_PIXEL_PNG}, "text": "a blue dot"},
                    ],
                    "top_k": 3,
                }
            ]
        },
    )

    instances: list[BatchInstance] = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, description="Return only the k most probable classes.")


# A form field is absent or holds a value: it cannot be null, so the schema must not offer it.
FormTopK = Annotated[int, Field(ge=1)] | SkipJsonSchema[None]


class PredictForm(BaseModel):
    """``multipart/form-data`` body of ``POST /v1/predict``: an image, a text, or both."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["image"]},
                {"required": ["text"], "properties": {"text": _SOME_TEXT}},
            ]
        }
    )

    image: bytes | SkipJsonSchema[None] = Field(
        None, description="An image file: JPEG, PNG, GIF, WebP, BMP or TIFF (omit: text only)."
    )
    text: str | SkipJsonSchema[None] = Field(
        None, description="The text that goes with the image (omit or '': image only)."
    )
    top_k: FormTopK = Field(None, description="Return only the k most probable classes.")


class BatchForm(BaseModel):
    """``multipart/form-data`` body of ``POST /v1/predict/batch``: parts paired by order."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["image"], "properties": {"image": {"minItems": 1}}},
                {
                    "required": ["text"],
                    "properties": {"text": {"minItems": 1, "items": _SOME_TEXT}},
                },
            ]
        }
    )

    image: list[bytes] | SkipJsonSchema[None] = Field(
        None, description="Repeated image file parts (omit them all: every item text only)."
    )
    text: list[str] | SkipJsonSchema[None] = Field(
        None,
        description="Repeated text parts, one per image, in the same order ('' for an item "
        "without text; omit them all: every item image only).",
    )
    top_k: FormTopK = Field(None, description="Return only the k most probable classes.")


class TensorSpec(BaseModel):
    """One input or output of the model."""

    name: str
    dtype: str
    shape: list[int] = Field(description="-1 stands for the batch dimension.")
    description: str
    optional: bool = Field(
        False, description="Whether a request may omit it (the model's blank stands in)."
    )


class ModalitySection(BaseModel):
    """What a one-modality answer of this model is worth (from its training metadata)."""

    trained_with_modality_dropout: bool = Field(
        description="Whether training blanked modalities at random, so that the model learnt "
        "to answer from one; without it, one-modality answers carry a warning."
    )
    modality_dropout: float | None = Field(
        description="The per-example probability of blanking each modality in training "
        "(null: not recorded)."
    )
    accuracy: float | None = Field(description="Test-split accuracy with both modalities.")
    image_only_accuracy: float | None = Field(
        description="Test-split accuracy with the text blanked."
    )
    text_only_accuracy: float | None = Field(
        description="Test-split accuracy with the image blanked."
    )
    blanks: dict[str, str] = Field(
        description="What stands in for a missing modality: the image (pixels) and the text."
    )


class ModelDescription(BaseModel):
    """What is served: labels, device, signature, evaluation metrics and provenance."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "demo",
                    "version": 1,
                    "labels": ["bird", "cat", "dog"],
                    "device": "/GPU:0",
                    "inputs": [
                        {
                            "name": "image",
                            "dtype": "float32",
                            "shape": [-1, 64, 64, 3],
                            "description": "RGB pixels 0..255 ...",
                        },
                        {"name": "text", "dtype": "string", "shape": [-1], "description": "..."},
                    ],
                    "outputs": [
                        {
                            "name": "probabilities",
                            "dtype": "float32",
                            "shape": [-1, 3],
                            "description": "Softmax over labels, in label order.",
                        }
                    ],
                    "metrics": {"test": {"accuracy": 0.95, "f1_macro": 0.95}},
                    "modalities": {
                        "trained_with_modality_dropout": True,
                        "modality_dropout": 0.2,
                        "accuracy": 0.95,
                        "image_only_accuracy": 0.71,
                        "text_only_accuracy": 0.83,
                        "blanks": {"image": "all zeros", "text": ""},
                    },
                    "explain": ["modality"],
                    "created_at": "2024-05-01T12:00:00+00:00",
                    "framework": {"tensorflow": "2.21.0", "keras": "3.15.1"},
                }
            ]
        }
    )

    name: str
    version: int = Field(description="The version unpinned requests get (outside a canary).")
    versions: list[int] = Field(default_factory=list, description="Every served version.")
    version_labels: dict[str, int] = Field(
        default_factory=dict, description="Labels (stable, canary, ...) and their versions."
    )
    canary_percent: float = Field(
        0.0, description="Share of unpinned requests the canary version answers, in per cent."
    )
    memory_bytes: dict[str, int | None] = Field(
        default_factory=dict,
        description="Per served version, how much the process's resident memory grew while "
        "loading it (null where not measured, e.g. a classifier given in process).",
    )
    labels: list[str] = Field(description="Class names in output order.")
    device: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metrics: dict[str, Any] = Field(description="Evaluation metrics recorded at training time.")
    modalities: ModalitySection
    explain: list[str] = Field(description="The explain= values prediction routes accept.")
    created_at: str
    framework: dict[str, str]


class RepositoryModel(BaseModel):
    """A model of the store: its versions, and which of them are served."""

    name: str
    versions: list[int]
    served: list[int]
    state: Literal["READY", "UNAVAILABLE"]


class ModelList(BaseModel):
    """The models this server holds (and, when asked, every model of the store)."""

    models: list[ModelDescription]
    repository: list[RepositoryModel] | None = None


def _json_number(value: Any) -> Any:
    """A version is a JSON number: no string (``"1"``) or boolean stands for one."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


class LabelUpdate(BaseModel):
    """``PUT /v1/models/{name}/labels/{label}``: the served version the label points to
    (null: remove the label)."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(ge=1)

    _number = field_validator("version", mode="before")(lambda v: _json_number(v))


class CanaryUpdate(BaseModel):
    """``PUT /v1/models/{name}/canary``: the canary version and its share of traffic."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="A served version; the label `canary` moves to it.")

    _number = field_validator("version", mode="before")(lambda v: _json_number(v))
    percent: float | None = Field(
        None, ge=0, le=100, description="Share of unpinned requests, in per cent (unset: kept)."
    )


class RepositoryChange(BaseModel):
    """What a load or unload did."""

    model: str
    versions: list[int]
    state: Literal["READY", "UNAVAILABLE"]


class ReloadResponse(BaseModel):
    """What ``POST /v1/models/{name}/reload`` did."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "demo",
                    "version": 2,
                    "previous_version": 1,
                    "reloaded": True,
                    "message": "now serving version 2 (was 1)",
                }
            ]
        }
    )

    model: str
    version: int = Field(description="The version served after the reload.")
    previous_version: int = Field(description="The version served before it.")
    reloaded: bool = Field(description="Whether a newer version was swapped in.")
    message: str


class LiveResponse(BaseModel):
    """The process is up."""

    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    """The model is loaded, verified against its golden examples, and serving."""

    status: Literal["ready"] = "ready"
    model: str = Field(description="The default model.")
    version: int = Field(description="The version of the default model unpinned requests get.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_image.")
    message: str = Field(description="What went wrong, for people.")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": {"code": "invalid_image", "message": "cannot decode image: ..."}}
            ]
        }
    )

    error: ErrorDetail
