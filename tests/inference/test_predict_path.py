"""How a one-image request reaches the model: queued by its decoding thread, except while
the service refuses requests, when it goes back through the event loop (which then paces
the decoding threads). Either way it gets the same answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.serving.dataplane.items import Item
from service.serving.dataplane.predict import predict_items
from service.serving.inference import batching
from service.serving.inference.runtime import Runtime
from service.serving.settings import Settings
from tests.support.fakes import RED, FakeClassifier, image_bytes


async def _answer(runtime: Runtime, calls: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Predict one pair, recording which of the batcher's two ways it took."""
    batcher = runtime.batcher
    for way in ("predict", "predict_prepared"):
        original = getattr(batcher, way)

        def spy(*args: Any, _way: str = way, _original: Any = original) -> Any:
            calls.append(_way)
            return _original(*args)

        monkeypatch.setattr(batcher, way, spy)
    probabilities = await predict_items(runtime, [Item(image_bytes(RED), "red")])
    monkeypatch.undo()
    return probabilities


def test_a_refusal_sends_requests_through_the_event_loop_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        settings = Settings(model_store=tmp_path, model_name="fake", decode_threads=1)
        runtime = Runtime.start(FakeClassifier(), settings)
        batcher = runtime.batcher
        calls: list[str] = []
        try:
            assert not batcher.refusing
            direct = await _answer(runtime, calls, monkeypatch)
            batcher.note_refusal()
            assert batcher.refusing
            through_loop = await _answer(runtime, calls, monkeypatch)
            # Saturated no longer once REFUSING_S has passed since the last refusal.
            monkeypatch.setattr(batching, "REFUSING_S", 0.0)
            assert not batcher.refusing
            monkeypatch.undo()
        finally:
            await runtime.close()
        assert calls == ["predict_prepared", "predict"]
        np.testing.assert_array_equal(direct, through_loop)

    asyncio.run(body())
