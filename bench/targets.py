"""What the benchmark can drive over HTTP, and how to start each one on a port.

- ``service``: ``mmserve serve`` (one row per ``--workers`` value when given).
- ``floor``: :mod:`bench.floor_server`, the constant-answer HTTP floor.
- ``naive``: :mod:`bench.naive_server`, ``model.predict`` per request on the event loop.
- ``mosec``, ``mlserver``: the peers (:mod:`bench.peers`), each in its own venv.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.peer_envs import PeerEnv
from bench.servers import ROOT, free_port, server_env, service_command, uvicorn_command

MULTIPART = "multipart"
MSGPACK = "msgpack"
V2_JSON = "v2-json"

PEER_NAMES = ("mosec", "mlserver")
PEER_LABELS = {
    "mosec": "mosec 0.9.8 (2 decode processes, batch 32 / 10 ms)",
    "mlserver": "MLServer 1.7.1 (adaptive batching 32 / 10 ms, parallel_workers=0)",
}


@dataclass(frozen=True)
class Target:
    """One server to start and drive."""

    name: str
    kind: str
    command: Callable[[int, Path], list[str]]
    ready_path: str
    predict_path: str
    body_format: str
    env: dict[str, str] = field(default_factory=dict)
    metrics_path: str | None = None
    fixed_batch_size: float | None = None


def service(
    store: Path, model: str, extra_args: Sequence[str], workers: int | None, name: str
) -> Target:
    """This service; ``workers`` adds ``--workers N`` to ``mmserve serve``."""
    return Target(
        name=name,
        kind="service",
        command=lambda port, _work: service_command(port, store, model, extra_args, workers),
        ready_path="/health/ready",
        predict_path="/v1/predict",
        body_format=MULTIPART,
        env=server_env(),
        metrics_path="/metrics",
    )


def floor() -> Target:
    """The constant-answer endpoint."""
    return Target(
        name="floor",
        kind="floor",
        command=lambda port, _work: uvicorn_command(port, "bench.floor_server:app"),
        ready_path="/health",
        predict_path="/predict",
        body_format=MULTIPART,
        env=server_env(),
    )


def naive(version_path: Path) -> Target:
    """The naive endpoint: one request at a time through model.predict, a batch of one."""
    return Target(
        name="naive",
        kind="naive",
        command=lambda port, _work: uvicorn_command(port, "bench.naive_server:app"),
        ready_path="/health",
        predict_path="/predict",
        body_format=MULTIPART,
        env=server_env({"BENCH_NAIVE_MODEL": str(version_path.resolve())}),
        fixed_batch_size=1.0,
    )


def _peer_env(version_path: Path) -> dict[str, str]:
    env = server_env({"BENCH_PEER_MODEL": str(version_path.resolve())})
    # The peers import the project's preprocessing (and bench.peers) from the checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("VIRTUAL_ENV", None)
    return env


def mosec(peer: PeerEnv, version_path: Path) -> Target:
    """mosec: msgpack bodies on ``POST /inference``."""
    return Target(
        name="mosec",
        kind="peer",
        command=lambda port, _work: [
            str(peer.python),
            "-m",
            "bench.peers.mosec_server",
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout",
            "60000",
            "--log-level",
            "warning",
        ],
        ready_path="/",
        predict_path="/inference",
        body_format=MSGPACK,
        env=_peer_env(version_path),
    )


MLSERVER_MODEL = "fused"


def mlserver(peer: PeerEnv, version_path: Path) -> Target:
    """MLServer: Open Inference Protocol JSON on ``POST /v2/models/fused/infer``."""

    def command(port: int, work: Path) -> list[str]:
        folder = work / "mlserver"
        model = folder / MLSERVER_MODEL
        model.mkdir(parents=True, exist_ok=True)
        settings = {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,
        }
        model_settings = {
            "name": MLSERVER_MODEL,
            "implementation": "bench.peers.mlserver_runtime.FusedRuntime",
            "max_batch_size": 32,
            "max_batch_time": 0.01,
            "parameters": {"uri": str(version_path.resolve())},
        }
        (folder / "settings.json").write_text(json.dumps(settings, indent=2))
        (model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        return [str(peer.path / "bin" / "mlserver"), "start", str(folder)]

    return Target(
        name="mlserver",
        kind="peer",
        command=command,
        ready_path=f"/v2/models/{MLSERVER_MODEL}/ready",
        predict_path=f"/v2/models/{MLSERVER_MODEL}/infer",
        body_format=V2_JSON,
        env=_peer_env(version_path),
    )
