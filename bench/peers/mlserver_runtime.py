"""The MLServer peer: a small custom runtime behind MLServer's adaptive batching.

MLServer merges concurrent Open Inference Protocol requests into one (up to
``max_batch_size`` 32, waiting at most ``max_batch_time`` 10 ms; set in the generated
``model-settings.json``) and calls :meth:`FusedRuntime.predict` once per batch, in the
server process (``parallel_workers=0``). Request inputs: ``image`` (``BYTES``, the encoded
file in base64) and ``text`` (``BYTES``); output ``probabilities`` (``FP32``, [N, C]).
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from bench.peers.model import FusedModel, decode


class FusedRuntime(MLModel):
    """Decode every image of the (merged) request, then one batched forward pass."""

    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        self._model = FusedModel(Path(uri) if uri else None)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: i for i in payload.inputs}
        size = self._model.size
        images = np.stack([decode(base64.b64decode(x), size) for x in inputs["image"].data])
        texts = [x.decode() if isinstance(x, bytes) else str(x) for x in inputs["text"].data]
        probs = self._model.predict(images, texts)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                ResponseOutput(
                    name="probabilities",
                    shape=list(probs.shape),
                    datatype="FP32",
                    data=probs.ravel().tolist(),
                )
            ],
        )
