"""The container files run the same commands the tests run (no Docker engine here).

The Dockerfile's CMD and HEALTHCHECK and the compose services are parsed and executed
against a real server process, so they cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.servers import ROOT, cli_server_command, running_server

pytestmark = pytest.mark.slow


def dockerfile() -> str:
    # Join continuation lines so each instruction is one line.
    return re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())


def instruction(name: str) -> str:
    (line,) = [ln for ln in dockerfile().splitlines() if ln.startswith(f"{name} ")]
    return line[len(name) + 1 :].strip()


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def healthcheck_argv() -> list[str]:
    check = instruction("HEALTHCHECK")
    return shlex.split(check[check.index("CMD ") + 4 :])


def test_container_command_and_healthcheck_work(trained_store: Path, tmp_path: Path) -> None:
    assert json.loads(instruction("CMD")) == ["mmserve", "serve"]
    argv = healthcheck_argv()
    assert argv[0] == "python" and "http://127.0.0.1:8000/health/ready" in argv[-1]
    with running_server(trained_store, tmp_path, cli_server_command) as (url, _process):
        port = url.rsplit(":", 1)[1]
        probe = [sys.executable, *argv[1:-1], argv[-1].replace(":8000/", f":{port}/")]
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    # The same probe fails once nothing is listening.
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0


def test_compose_matches_the_image_and_the_trainer() -> None:
    services = compose()["services"]
    api, train = services["api"], services["train"]
    assert api["healthcheck"]["test"][1:] == healthcheck_argv()
    assert any(v.endswith(":/models:ro") for v in api["volumes"])
    assert api["restart"] == "unless-stopped"
    assert api["deploy"]["resources"]["limits"]["memory"]
    assert train["profiles"] == ["train"]
    assert train["build"]["args"]["TRAIN"] == "1"  # the image with the train extra
    assert 'if [ "$TRAIN" = "1" ]; then extras="$extras,train"' in dockerfile()
    command = train["command"]
    assert command[0] == "mmserve-train"
    from service.training.cli import build_parser

    args = build_parser().parse_args(command[1:])
    assert args.demo and str(args.model_store) == "/models"
    env = dockerfile()
    assert "MMSERVE_MODEL_STORE=/models" in env and "USER mmserve" in env
