"""Start-up without a classifier: settings from the environment, fail fast and say why."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.errors import NotFound
from service.serving.app import create_app
from service.serving.settings import Settings


def test_missing_model_fails_start_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(model_store=tmp_path, model_name="absent"))
    with pytest.raises(NotFound), TestClient(app):
        pass
    assert "start-up failed" in caplog.text
    assert "'absent'" in caplog.text and str(tmp_path) in caplog.text


def test_settings_are_read_at_start_up_not_at_creation(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MMSERVE_MAX_TEXT_CHARS", "not a number")
    app = create_app()
    with pytest.raises(ValidationError), TestClient(app):
        pass
    assert "start-up failed" in caplog.text and "max_text_chars" in caplog.text
