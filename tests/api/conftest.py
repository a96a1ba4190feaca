"""Fixtures: settings with small limits and a TestClient serving a fake classifier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.serving.app import create_app
from service.serving.settings import Settings
from tests.support.fakes import FakeClassifier


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        model_store=tmp_path,
        model_name="fake",
        max_batch_items=4,
        max_text_chars=50,
        max_image_pixels=100_000,
        decode_threads=2,
    )


@pytest.fixture
def fake() -> FakeClassifier:
    return FakeClassifier()


@pytest.fixture
def client(settings: Settings, fake: FakeClassifier) -> Iterator[TestClient]:
    with TestClient(create_app(settings, classifier=fake)) as test_client:
        yield test_client
