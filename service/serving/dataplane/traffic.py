"""What every answered request tells the drift metrics and the capture writer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.serving.dataplane.items import Item, modalities
from service.serving.inference.runtime import Runtime
from service.serving.request_record import current_request_id


def observe(runtime: Runtime, items: Sequence[Item], probabilities: np.ndarray) -> None:
    """Count the answers ``[N, C]`` to ``items`` in the version's drift metrics, and hand
    them to the capture writer when the request is drawn for capture (never waits)."""
    if runtime.drift is not None:
        runtime.drift.observe(probabilities, (modalities(item) for item in items))
    capture = runtime.capture
    if capture is not None and capture.sampled():
        model = runtime.classifier
        capture.submit(
            model.name,
            model.version,
            model.labels,
            current_request_id(),
            [(item.image, item.text) for item in items],
            probabilities,
        )
