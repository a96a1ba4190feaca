"""Service settings: environment variables with the prefix ``MMSERVE_`` (or a ``.env`` file).

Every user-facing knob is one documented field; invalid values fail at start-up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.preprocessing import GOLDEN_TOLERANCE, ImageFormat
from service.serving.inference.policy import VersionPolicy

__all__ = ["ImageFormat", "Settings"]


_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}


class Settings(BaseSettings):
    """Configuration for the inference service."""

    model_config = SettingsConfigDict(
        env_prefix="MMSERVE_", env_file=".env", extra="ignore", protected_namespaces=()
    )

    model_store: Path = Field(
        Path("model_store"), description="Folder holding <name>/<version>/ model artifacts."
    )
    model_name: str = Field(
        "demo",
        description="The default model: the one /v1/predict answers for, and the one served "
        "when `models` is unset.",
    )
    model_version: int | None = Field(
        None,
        ge=1,
        description="Version of the default model to serve (a pinned version); unset "
        "follows `version_policy`.",
    )
    models: str = Field(
        "",
        description="Models to serve, comma-separated (`products,memes`), or `*` for every "
        "model in the store; unset: `model_name` alone. Readiness is true when every one "
        "of them is loaded and verified.",
    )
    version_policy: str = Field(
        "latest",
        description="Versions served per model: `latest`, `latest:N` (the N newest) or a "
        "list (`1,3`, pinned), for every model; or per model, `products=latest:2;memes=1` "
        "(models not named get `latest`). A canary needs its version served: `latest:2`.",
    )
    canary_percent: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Share (in per cent) of a model's unpinned requests that its `canary` "
        "label's version answers, when the model's labels file sets none.",
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
        10.0,
        ge=0,
        le=1000,
        description="Longest a ready batch waits for requests that are already being decoded "
        "to join it. Never applies when no request is on its way, so an idle service adds no "
        "delay. 0: never wait. 10 ms measured 4-6% more throughput than 5 ms at concurrency "
        "8 to 64 (bigger batches: a model call has a fixed cost); 20 ms no more than 10.",
    )
    max_queue_items: int = Field(
        256,
        ge=1,
        description="Most items waiting for the model, each request already let in and "
        "still on its way to the queue (its body being read, its images decoded) counted as "
        "one; more get 503 with Retry-After before their body is read (a request of more "
        "items than the room left: once they are decoded).",
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
    max_request_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1,
        description="Largest request body accepted, in bytes (413 above). A declared "
        "Content-Length above it is refused before the body is read; a body without one is "
        "counted as it arrives and refused as soon as it passes the limit.",
    )
    allowed_image_formats: Annotated[frozenset[ImageFormat], NoDecode] = Field(
        frozenset(get_args(ImageFormat)),
        min_length=1,
        description="Image formats accepted, detected from the content (never the file name "
        "or content type); comma-separated in the environment, e.g. `JPEG,PNG`. A decodable "
        "image of another format gets 415.",
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys. When any key is configured (here or in "
        "api_keys_file), every endpoint but the health probes requires one, sent as "
        "`Authorization: Bearer <key>` or `X-API-Key: <key>`; none: no authentication.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="A file of API keys (e.g. a container secret): one key per line, blank "
        "lines and lines starting with # ignored. Read at start-up; it must hold a key.",
    )
    admin_api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated admin keys. When any is configured (here or in "
        "admin_api_keys_file), the routes that change what is served (load, unload, "
        "labels, canary, promote, rollback, reload) require one, sent like an API key: an "
        "ordinary API key gets 403 there. Admin keys are also valid wherever API keys are. "
        "None: those routes need what every other route needs (an API key when any is "
        "configured).",
    )
    admin_api_keys_file: Path | None = Field(
        None,
        description="A file of admin keys, in the format of api_keys_file. Read at start-up; "
        "it must hold a key.",
    )
    decode_threads: int = Field(
        default_factory=lambda: max(2, (os.cpu_count() or 1) - 1),
        ge=1,
        description="Threads per worker that decode and resize images (default: one less "
        "than the number of cores, at least 2). On 2 cores two threads per worker measured "
        "6-15% more throughput than one at concurrency 32 and 64, with one worker and with "
        "two: the images of a burst are decoded side by side, so they reach the next batch "
        "together.",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="TensorFlow threads inside one op (0: TensorFlow chooses)."
    )
    inter_op_threads: int = Field(
        0, ge=0, description="TensorFlow ops run in parallel (0: TensorFlow chooses)."
    )
    workers: int = Field(
        default_factory=lambda: min(4, len(os.sched_getaffinity(0))),
        ge=1,
        le=64,
        description="Server processes sharing the port (`mmserve serve` only; default: one "
        "per core this process may use, at most 4). Each loads and verifies its own copy of "
        "the model and runs its own batcher; readiness is true only when every worker is "
        "ready, SIGTERM drains them all, a reload reaches them all, and /metrics adds them "
        "up. On 2 cores two workers did 1.5x-2.1x the throughput of one (BENCHMARKS.md). "
        "Each worker holds the model in memory: with a GPU, or a model large next to the "
        "host's memory, use 1.",
    )
    worker_sync_timeout_s: float = Field(
        120.0,
        gt=0,
        description="With several workers: how long a load, unload, label change or reload "
        "through the API waits for every other worker to apply it (each loads, warms up and "
        "checks the model itself) before answering 504; the workers keep trying after it.",
    )
    max_in_flight: int = Field(
        64,
        ge=1,
        description="Most model requests (POST) handled at once by one worker; more are "
        "refused with 503 and Retry-After before their body is read, so a worker's request "
        "memory stays under max_in_flight x max_request_bytes whatever clients send, and "
        "the requests it accepts are answered within a few batches' time.",
    )
    max_connections: int = Field(
        2048,
        ge=1,
        description="Most open client connections per worker; a connection beyond it is "
        "answered 503 and closed at once, so slow or idle clients cannot exhaust file "
        "descriptors.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Deadline for a request's headers to arrive, from its first byte (or from "
        "the connection's opening); past it the client gets 408 and the connection closes.",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Deadline for a request's whole body to arrive once its headers have; "
        "past it the client gets 408 and the connection closes.",
    )
    gc_freeze: bool = Field(
        True,
        description="Move every object that exists once the model is loaded (TensorFlow's "
        "included) out of the garbage collector's sight (`gc.freeze()`): full collections "
        "then scan only what requests allocate, instead of pausing every thread for about "
        "200 ms several times a minute under load.",
    )
    direct_predict: bool = Field(
        True,
        description="Under `mmserve serve`, answer the common `POST /v1/predict` (no query "
        "string, no API keys, a declared length) in the server's connection handler, with "
        "the same steps, answer, errors, log line and metrics as the app but without its "
        "middleware stack and routing (about 0.1-0.15 ms of CPU less per request). Off: "
        "every request goes through the app.",
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs through the "
        "globally configured providers. Off by default: when no provider is configured it "
        "still costs a few per cent of a core per request at high load to find that out.",
    )
    compile_text_encoder: bool = Field(
        True,
        description="On a CPU, compile the model's recurrent text encoder with XLA for the "
        "batch sizes warmed up (1 to max_batch_size; token rows padded to a power of two), "
        "which removes most of a model call's fixed cost. Costs about 2 s of start-up and "
        "100 MB of memory per version loaded (demo-sized LSTM model); the golden check "
        "proves the answers still match training. "
        "Off: every batch runs the ordinary graph.",
    )
    golden_tolerance: float = Field(
        GOLDEN_TOLERANCE,
        gt=0,
        description="Largest probability difference allowed between the served model and "
        "the artifact's golden examples before the service refuses to become ready.",
    )
    reload_poll_s: float = Field(
        5.0,
        ge=0,
        description="How often the model store is checked for a newer version of the served "
        "model, which is then loaded, verified and swapped in without a restart. 0: never "
        "(POST /v1/models/{name}/reload still works). Ignored when model_version is pinned.",
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM or SIGINT, how long requests in flight may take to finish "
        "before they are cancelled; also how long an old model version serves its requests "
        "after a reload before it is closed.",
    )
    ui: bool = Field(
        True,
        description="Serve the playground and model card page at `/` (`/ui/`): plain HTML, "
        "CSS and JavaScript that call the public API from the browser. false: the page and "
        "its files answer 404; the API, artifact files route included, is unchanged.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        description="How the mmserve loggers write: json (one JSON object per line) or text.",
    )
    access_log: bool = Field(
        True,
        description="One log line per request on the mmserve.access logger (at info level). "
        "false: no access log (`mmserve serve` never turns on uvicorn's own).",
    )

    capture_dir: Path | None = Field(
        None,
        description="Folder where sampled requests are kept as a training manifest: image "
        "files plus JSON Lines rows (image path, text, predicted label and probabilities, "
        "model, version, request id, time, and an empty `label` to fill in). Unset (the "
        "default): nothing is captured. Requests and API keys are never written, only the "
        "image and the text. One service per folder.",
    )
    capture_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of requests captured when `capture_dir` is set (0..1; each "
        "request is drawn at random, all its pairs together). 0: nothing is captured.",
    )
    capture_max_bytes: int = Field(
        1024**3,
        ge=1024**2,
        description="Disk budget of `capture_dir`, in bytes (each file counted in whole "
        "4 KiB blocks). Each worker keeps to its share (budget / workers) by deleting its "
        "oldest closed segments, with their images, before writing past it.",
    )
    capture_segment_s: float = Field(
        60.0,
        gt=0,
        description="Longest a capture segment stays open: its rows become readable (the "
        "segment is renamed into place) at the latest this many seconds after its first row, "
        "or earlier once it holds a quarter of the worker's share of `capture_max_bytes`.",
    )
    capture_queue_bytes: int = Field(
        64 * 1024**2,
        ge=1,
        description="Most bytes (images and texts) waiting for the capture writer per "
        "worker; a sampled request that would pass it is dropped and counted in "
        '`mmserve_capture_dropped_total{reason="queue_full"}`, never waited for.',
    )

    # Parsed once at start-up from api_keys and api_keys_file; never printed (a private
    # attribute stays out of repr, and api_keys itself is a SecretStr).
    _api_key_set: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _admin_key_set: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @field_validator("allowed_image_formats", mode="before")
    @classmethod
    def _split_formats(cls, value: object) -> object:
        """Accept `JPEG,PNG` (or a JSON list) from the environment, any case, JPG/TIF aliases."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list | tuple | set | frozenset):
            names = (str(name).strip().upper() for name in value)
            return frozenset(_FORMAT_ALIASES.get(name, name) for name in names if name)
        return value

    @field_validator("api_keys_file", "admin_api_keys_file")
    @classmethod
    def _keys_file_holds_keys(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """A keys file that is unreadable or holds no key fails start-up rather than
        silently leaving the service open. (Checked here, not in the model validator: a
        model-level error would print the raw input, api_keys included.)"""
        if path is not None and not _read_keys_file(path, info.field_name or "keys file"):
            raise ValueError(f"{info.field_name} {path} holds no key")
        return path

    @field_validator("version_policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        """Fail at start-up on a policy that cannot be read."""
        _policies(value)
        return value

    @property
    def model_names(self) -> tuple[str, ...] | None:
        """The models to serve; None for every model in the store (``*``)."""
        text = self.models.strip()
        if text == "*":
            return None
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        return names or (self.model_name,)

    def policy_for(self, name: str) -> VersionPolicy:
        """The version policy of model ``name`` (a pinned ``model_version`` for the default
        model wins)."""
        if name == self.model_name and self.model_version is not None:
            return VersionPolicy(versions=(self.model_version,))
        default, per_model = _policies(self.version_policy)
        return per_model.get(name, default)

    @model_validator(mode="after")
    def _load_api_keys(self) -> Settings:
        """Collect the keys from api_keys and api_keys_file, and the admin keys."""
        self._api_key_set = _collect_keys(self.api_keys, self.api_keys_file, "api_keys_file")
        self._admin_key_set = _collect_keys(
            self.admin_api_keys, self.admin_api_keys_file, "admin_api_keys_file"
        )
        return self

    @property
    def api_key_set(self) -> frozenset[str]:
        """Every configured API key; empty when authentication is off."""
        return self._api_key_set

    @property
    def admin_key_set(self) -> frozenset[str]:
        """Every configured admin key; empty when the changing routes need no more than an
        API key."""
        return self._admin_key_set


def _policies(text: str) -> tuple[VersionPolicy, dict[str, VersionPolicy]]:
    """``latest:2`` (every model) or ``name=policy;name=policy`` (the rest: latest)."""
    if "=" not in text:
        return VersionPolicy.parse(text), {}
    per_model = {}
    for entry in text.split(";"):
        if entry.strip():
            name, _, policy = entry.partition("=")
            per_model[name.strip()] = VersionPolicy.parse(policy)
    return VersionPolicy(), per_model


def _collect_keys(listed: SecretStr, file: Path | None, field: str) -> frozenset[str]:
    """The comma-separated keys and those of the keys file."""
    keys = {key.strip() for key in listed.get_secret_value().split(",")}
    if file is not None:
        keys |= _read_keys_file(file, field)
    keys.discard("")
    return frozenset(keys)


def _read_keys_file(path: Path, field: str) -> set[str]:
    """The keys in ``path``: one per line, blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        # The reason only (no content): a decoding error would quote the file's bytes.
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read {field} {path}: {reason}") from None
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
