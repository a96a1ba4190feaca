"""The service's own counts read from its Prometheus ``/metrics`` endpoint: batch sizes,
refusals by stage, and any sum of samples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

BATCH_SIZE_METRIC = "mmserve_batch_size"
REFUSED_METRIC = "mmserve_requests_refused_total"


@dataclass(frozen=True)
class HistogramTotals:
    """A histogram's running ``_sum`` and ``_count`` (summed over label sets)."""

    total: float
    count: float


async def read_batch_sizes(client: httpx.AsyncClient, url: str) -> HistogramTotals | None:
    """The ``mmserve_batch_size`` totals, or None when the service has no ``/metrics``
    endpoint, or it does not export the histogram in Prometheus text format."""
    response = await client.get(url)
    if response.status_code != 200:
        return None
    try:
        return parse_histogram(response.text, BATCH_SIZE_METRIC)
    except ValueError:
        # Something answers at /metrics, but not in Prometheus text format.
        return None


def parse_histogram(text: str, name: str) -> HistogramTotals | None:
    """Sum and count of histogram (or summary) ``name`` in Prometheus text ``text``."""
    for family in text_string_to_metric_families(text):
        if family.name != name or family.type not in ("histogram", "summary"):
            continue
        total = sum(s.value for s in family.samples if s.name == f"{name}_sum")
        count = sum(s.value for s in family.samples if s.name == f"{name}_count")
        return HistogramTotals(total, count)
    return None


def mean_between(before: HistogramTotals | None, after: HistogramTotals | None) -> float | None:
    """Mean observation between two readings; None when either is missing or nothing was
    observed in between."""
    if before is None or after is None:
        return None
    count = after.count - before.count
    return (after.total - before.total) / count if count > 0 else None


def sample_sums(text: str) -> dict[str, float]:
    """Every sample name in Prometheus text ``text`` (a counter's ``<name>_total``, say) with
    the sum of its samples over all label sets."""
    sums: dict[str, float] = {}
    for sample in _samples(text):
        sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


async def read_refusals(client: httpx.AsyncClient, url: str) -> dict[str, float] | None:
    """The service's refusals summed by stage (``admission``: before the body was read;
    ``handler``: after it), or None when ``url`` serves no such counter in Prometheus text
    format (another server, or keys required)."""
    response = await client.get(url)
    return refusals_by_stage(response.text) if response.status_code == 200 else None


def refusals_by_stage(text: str) -> dict[str, float] | None:
    """``mmserve_requests_refused_total`` in Prometheus text ``text``, summed by stage; None
    when it holds no such sample, or ``text`` is not Prometheus text."""
    stages: dict[str, float] = {}
    try:
        for sample in _samples(text):
            if sample.name == REFUSED_METRIC:
                stage = sample.labels.get("stage", "")
                stages[stage] = stages.get(stage, 0.0) + sample.value
    except ValueError:  # something answers at /metrics, but not in Prometheus text format
        return None
    return stages or None


def _samples(text: str) -> Iterator[Sample]:
    """Every sample of every family in Prometheus text ``text`` (raises ValueError when it
    is not Prometheus text)."""
    for family in text_string_to_metric_families(text):
        yield from family.samples
