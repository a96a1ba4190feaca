"""Two real replicas behind the committed HAProxy configuration: load through it, and one
replica leaves mid-run (SIGTERM, as `docker compose stop` or a scale-down sends) without a
single failed request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.balancer import (
    Load,
    failures,
    golden_pair,
    redispatched,
    replicas_behind_haproxy,
    terminate_and_time,
    wait_for,
)
from tests.support.deploy_checks import SCALE_SERVICE, load_compose, stop_grace_seconds

pytestmark = pytest.mark.slow

BEFORE_DRAIN = 300
"""Predictions both replicas serve together before one is stopped (the split's sample)."""
AFTER_EXIT = 100
"""Predictions the remaining replica serves after the other exited."""
PHASE_TIMEOUT_S = 120


def test_a_replica_drains_under_load_without_a_failed_request(
    trained_store: Path, tmp_path: Path
) -> None:
    service = load_compose()["services"][SCALE_SERVICE]
    grace = stop_grace_seconds(service)
    image, text = golden_pair(trained_store, "tiny")
    with replicas_behind_haproxy(trained_store, "tiny", service["environment"], 2, tmp_path) as (
        url,
        (kept, drained),
        balancer,
    ):
        load = Load(url, image, text)
        load.start()
        try:

            def served() -> tuple[float, float]:
                return kept.predictions_served(), drained.predictions_served()

            wait_for(lambda: sum(served()) >= BEFORE_DRAIN, "load spread", PHASE_TIMEOUT_S)
            kept_before, drained_before = served()
            signalled = time.monotonic()
            status, drain_s = terminate_and_time(drained, timeout=grace)
            exited = time.monotonic()
            kept_at_exit = kept.predictions_served()
            wait_for(
                lambda: kept.predictions_served() >= kept_at_exit + AFTER_EXIT,
                "load after the drain",
                PHASE_TIMEOUT_S,
            )
        finally:
            load.stop()
        haproxy_log = balancer.text()

    outcomes = load.snapshot()
    share = drained_before / (kept_before + drained_before)
    across = [o for o in outcomes if o.started < exited and o.ended > signalled]
    print(
        f"\n{len(outcomes)} requests through HAProxy, {len(failures(outcomes))} failed; "
        f"split before the drain {kept_before:.0f} / {drained_before:.0f} "
        f"({100 * (1 - share):.1f}% / {100 * share:.1f}%); drained replica exited "
        f"{status} {drain_s:.2f} s after SIGTERM (grace {grace:g} s); {len(across)} requests "
        f"overlapped the drain; {redispatched(haproxy_log)} retried on the other replica"
    )
    assert failures(outcomes) == [], failures(outcomes)[:5]
    assert status == 0, drained.log()
    assert drain_s <= grace
    assert 0.35 <= share <= 0.65, (kept_before, drained_before)
    # The drain happened under load, and the remaining replica kept answering afterwards.
    assert across
    assert any(o.started > exited for o in outcomes)
    assert "SIGTERM: draining" in drained.log()
