"""The drift signals count what numpy says about each answer row: its top probability and
the first class that holds it, NaN and infinities included."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from prometheus_client import REGISTRY

from service.serving.metrics import DriftMetrics

LABELS = ["a", "b", "c", "d"]
_versions = itertools.count(1)

rows = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 5), st.just(len(LABELS))),
    # Ties and special values are what can tell two ways of counting apart.
    elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, float("nan"), float("inf"), float("-inf")])
    | st.floats(0, 1, width=32),
)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@settings(max_examples=60, deadline=None)
@given(rows)
def test_classes_and_top_probabilities_are_counted_as_numpy_computes_them(
    probabilities: np.ndarray,
) -> None:
    version = str(next(_versions))
    key = {"model": "drift-test", "version": version}
    drift = DriftMetrics("drift-test", int(version), LABELS)
    drift.observe(probabilities, ["image+text"] * len(probabilities))

    expected = np.bincount(probabilities.argmax(axis=1), minlength=len(LABELS))
    counted = [_value("mmserve_predicted_class_total", **key, label=label) for label in LABELS]
    assert counted == expected.tolist()
    tops = probabilities.max(axis=1)
    # prometheus-client files a NaN in no bucket, +Inf's included.
    assert _value("mmserve_top_probability_count", **key) == int(np.sum(~np.isnan(tops)))
    for bound in (0.5, 0.9):
        below = int(np.sum(tops <= bound))
        assert _value("mmserve_top_probability_bucket", **key, le=str(bound)) == below
    assert _value("mmserve_request_modalities_total", **key, modalities="image+text") == len(tops)
