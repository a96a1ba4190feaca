"""The reference point: an endpoint written the way a hand-written one usually is.

``async def`` route, decode with the service's own preprocessing, ``model.predict`` on a
batch of one, per request, on the event loop. Blocking the loop (so requests are served
strictly one at a time) is part of what this measures; do not "fix" it.

Run with ``BENCH_NAIVE_MODEL=<model_store>/<name>/<version> uvicorn bench.naive_server:app``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse

from service.preprocessing import preprocess_image

MODEL_ENV = "BENCH_NAIVE_MODEL"

_state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    import keras
    import tensorflow as tf

    folder = Path(os.environ[MODEL_ENV])
    metadata = json.loads((folder / "metadata.json").read_text())
    _state["tf"] = tf
    _state["model"] = keras.saving.load_model(folder / "model.keras", compile=False)
    _state["size"] = (int(metadata["image_size"][0]), int(metadata["image_size"][1]))
    _state["labels"] = list(metadata["labels"])
    yield
    _state.clear()


app = FastAPI(title="naive reference endpoint", lifespan=lifespan)


@app.get("/health")
async def health() -> JSONResponse:
    """200 once the model is loaded."""
    loaded = "model" in _state
    return JSONResponse({"ready": loaded}, status_code=200 if loaded else 503)


@app.post("/predict")
async def predict(
    image: Annotated[UploadFile, File()], text: Annotated[str, Form()]
) -> dict[str, Any]:
    """Probabilities for one image+text pair."""
    tf = _state["tf"]
    x = preprocess_image(await image.read(), _state["size"])
    probs = _state["model"].predict({"image": x[None], "text": tf.constant([[text]])}, verbose=0)
    row = np.asarray(probs)[0]
    labels: list[str] = _state["labels"]
    return {
        "label": labels[int(np.argmax(row))],
        "probabilities": dict(zip(labels, row.tolist(), strict=True)),
    }
