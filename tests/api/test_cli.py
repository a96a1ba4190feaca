"""The `mmserve` command line and the cost of importing the entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from service.main import cli
from service.serving.api.state import app_state

ROOT = Path(__file__).resolve().parents[2]


def test_entry_points_do_not_import_tensorflow() -> None:
    code = "import sys, service.main; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 0
    assert "usage: mmserve" in capsys.readouterr().out


def test_serve_passes_options_as_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: calls.append({"config": self.config})
    )
    monkeypatch.setenv("MMSERVE_SHUTDOWN_TIMEOUT_S", "12.5")
    monkeypatch.setenv("MMSERVE_WORKERS", "1")  # one process: the default depends on the cores
    argv = ["serve", "--host", "0.0.0.0", "--port", "9001", "--model-store", str(tmp_path)]
    argv += ["--model-name", "tiny", "--model-version", "2", "--device", "cpu"]
    # Never started (the patched run returns at once): uvicorn's start-up failure status.
    assert cli([*argv, "--log-level", "warning"]) == 3
    (call,) = calls
    config = call["config"]
    assert (config.host, config.port, config.log_level) == ("0.0.0.0", 9001, "warning")
    assert config.timeout_graceful_shutdown == 13  # whole seconds, rounded up
    settings = app_state(config.app).settings
    assert settings is not None
    assert settings.model_store == tmp_path
    assert (settings.model_name, settings.model_version, settings.device) == ("tiny", 2, "cpu")


@pytest.mark.parametrize("argv", [[], ["serve", "--port", "0"], ["serve", "--device", "tpu"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2
    assert "mmserve" in capsys.readouterr().err


def test_serve_with_several_workers_hands_them_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from service.serving import workers

    given: list[Any] = []
    monkeypatch.setattr(workers, "run_workers", lambda settings: given.append(settings) or 0)
    argv = ["serve", "--workers", "3", "--model-store", str(tmp_path), "--port", "9002"]
    assert cli(argv) == 0
    (settings,) = given
    assert (settings.workers, settings.port, settings.model_store) == (3, 9002, tmp_path)
