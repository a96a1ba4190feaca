"""The HTTP floor: parse the same multipart body as the service, answer a constant JSON.

No decoding, no model: what FastAPI, uvicorn and multipart parsing alone cost per
request on this machine. A server cannot answer faster than this with the same stack.

Run with ``uvicorn bench.floor_server:app``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile

app = FastAPI(title="constant-answer floor")

_ANSWER = {"label": "constant", "probabilities": {"constant": 1.0}}


@app.get("/health")
async def health() -> dict[str, bool]:
    """Always ready."""
    return {"ready": True}


@app.post("/predict")
async def predict(
    image: Annotated[UploadFile, File()], text: Annotated[str, Form()]
) -> dict[str, Any]:
    """Read the image part and the text field, then answer the same JSON every time."""
    await image.read()
    return _ANSWER
