"""The mosec peer: msgpack body, a decode stage of 2 processes, a batching inference stage.

Configured as mosec's documentation recommends for throughput: CPU-bound decoding in its
own worker processes (``num=2``), the model in one process with dynamic batching
(``max_batch_size=32``, ``max_wait_time=10`` ms). Request: msgpack
``{"image": <bytes>, "text": <str>}`` on ``POST /inference``; answer: JSON
``{"label", "probabilities"}``. The model folder comes from ``$BENCH_PEER_MODEL``.

Run in the mosec venv with the repository on ``PYTHONPATH``:
``python bench/peers/mosec_server.py --address 127.0.0.1 --port 8000``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mosec import Server, Worker
from mosec.mixin import MsgpackMixin

from bench.peers.model import FusedModel, decode, image_size

DECODE_PROCESSES = 2
MAX_BATCH_SIZE = 32
MAX_WAIT_MS = 10


class Decode(MsgpackMixin, Worker):
    """Ingress: msgpack body -> (float32 pixels, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.size = image_size()

    def forward(self, data: dict[str, Any]) -> tuple[np.ndarray, str]:
        return decode(data["image"], self.size), str(data["text"])


class Inference(Worker):
    """Egress: a batch of decoded pairs -> one answer each (JSON)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = FusedModel()

    def forward(self, data: list[tuple[np.ndarray, str]]) -> list[dict[str, Any]]:
        images = np.stack([pixels for pixels, _ in data])
        probs = self.model.predict(images, [text for _, text in data])
        return [self.model.answer(row) for row in probs]


if __name__ == "__main__":
    server = Server()
    server.append_worker(Decode, num=DECODE_PROCESSES)
    server.append_worker(Inference, num=1, max_batch_size=MAX_BATCH_SIZE, max_wait_time=MAX_WAIT_MS)
    server.run()
