"""Service settings: environment variables with the prefix ``MMSERVE_`` (or a ``.env`` file).

Every user-facing knob is one documented field; invalid values fail at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration for the inference service."""

    model_config = SettingsConfigDict(
        env_prefix="MMSERVE_", env_file=".env", extra="ignore", protected_namespaces=()
    )

    model_store: Path = Field(
        Path("model_store"), description="Folder holding <name>/<version>/ model artifacts."
    )
    model_name: str = Field("demo", description="Name of the model to serve.")
    model_version: int | None = Field(
        None, ge=1, description="Version to serve; unset serves the latest (highest) one."
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="auto: the GPU when one is visible, else the CPU; gpu: fail at start "
        "when no GPU is visible; cpu: never use a GPU.",
    )
    host: str = Field("127.0.0.1", description="Address `mmserve serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `mmserve serve` listens on.")
    max_batch_size: int = Field(
        32,
        ge=1,
        le=4096,
        description="Most items the batcher puts into one model call. Requests that arrive "
        "while the model is busy are batched together up to this size.",
    )
    max_batch_delay_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Longest a ready batch waits for requests that are already being decoded "
        "to join it. Never applies when no request is on its way, so an idle service adds no "
        "delay. 0: never wait.",
    )
    max_queue_items: int = Field(
        256,
        ge=1,
        description="Most items waiting for the model; more get 503 with Retry-After.",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Deadline for a request's model answer, queueing included; past it: 504.",
    )
    max_batch_items: int = Field(
        64, ge=1, le=4096, description="Most image+text pairs accepted in one batch request."
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Images declaring more pixels are refused before decoding."
    )
    max_text_chars: int = Field(10_000, ge=1, description="Longest text accepted, in characters.")
    decode_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) - 1),
        ge=1,
        description="Threads that decode and resize images (default: one less than the "
        "number of cores, at least 1, which leaves a core to the event loop; on 2 cores one "
        "thread measured faster than two).",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="TensorFlow threads inside one op (0: TensorFlow chooses)."
    )
    inter_op_threads: int = Field(
        0, ge=0, description="TensorFlow ops run in parallel (0: TensorFlow chooses)."
    )
    golden_tolerance: float = Field(
        1e-4,
        gt=0,
        description="Largest probability difference allowed between the served model and "
        "the artifact's golden examples before the service refuses to become ready.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
