"""Pydantic bodies of the Open Inference Protocol (KServe v2) REST API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

Parameters = dict[str, Any]


class ServerMetadata(BaseModel):
    """``GET /v2``: who answers and which protocol extensions it speaks."""

    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    """``GET /v2/health/live``."""

    live: bool = True


class ServerReady(BaseModel):
    """``GET /v2/health/ready``."""

    ready: bool = True


class ModelReady(BaseModel):
    """``GET /v2/models/{name}/ready``."""

    name: str
    ready: bool = True


class MetadataTensor(BaseModel):
    """One input or output of a model: its name, protocol datatype and shape (-1: any)."""

    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    """``GET /v2/models/{name}``: the versions served and the tensors a request uses."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters | None = Field(
        None,
        description="What a one-modality request is worth: trained_with_modality_dropout, "
        "modality_dropout, accuracy, image_only_accuracy, text_only_accuracy (test split; "
        "absent when not recorded), optional_inputs ('image,text': either may be left out, "
        "not both) and explain ('modality').",
    )


class RequestInput(BaseModel):
    """An input tensor: its elements in ``data`` (JSON) or in the binary section
    (``parameters.binary_data_size``)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: Any = None


class RequestOutput(BaseModel):
    """An output the client asks for, with ``binary_data`` or ``classification`` parameters."""

    name: str
    parameters: Parameters | None = None


class InferRequest(BaseModel):
    """``POST /v2/models/{name}/infer``: the JSON part of an inference request."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [{"b64": ""}]},
                        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a cat"]},
                    ],
                    "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
                }
            ]
        }
    )

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """An output tensor: ``data`` in JSON, or ``parameters.binary_data_size`` bytes after the
    JSON header."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    """The JSON part of an inference response."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = Field(
        None,
        description="modalities: what each item sent ('image+text', 'image' or 'text'), "
        "comma-separated in item order; warnings: present when there are any, '; '-separated; "
        "explain: 'modality' when the explanation's outputs are in the response.",
    )
    outputs: list[ResponseOutput]


class V2Error(BaseModel):
    """The protocol's error body."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "unknown model 'x'"}]})

    error: str = Field(description="What went wrong, for people.")


class RepositoryIndexRequest(BaseModel):
    """``POST /v2/repository/index``: ``ready`` lists only the models that serve."""

    model_config = ConfigDict(extra="forbid")

    ready: StrictBool = False


class RepositoryIndexEntry(BaseModel):
    """One model version of the repository and its state."""

    name: str
    version: str
    state: str = Field(description="READY (served) or UNAVAILABLE.")
    reason: str = ""
