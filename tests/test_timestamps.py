"""The service's one time format, against the standard library's."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from service.timestamps import utc_millis


@given(st.integers(0, 4_102_444_800_000), st.integers(100, 900))
def test_the_same_text_as_isoformat_to_the_millisecond(millis: int, micros: int) -> None:
    # Microseconds away from a millisecond's edge: the two round a float's last bit alike
    # there, and at the edge a millisecond either way is the float's own uncertainty.
    seconds = millis / 1000 + micros / 1_000_000
    assert utc_millis(seconds) == datetime.fromtimestamp(seconds, UTC).isoformat(
        timespec="milliseconds"
    )


def test_the_kept_second_changes_with_the_time() -> None:
    assert utc_millis(1.5) == "1970-01-01T00:00:01.500+00:00"
    assert utc_millis(1.999) == "1970-01-01T00:00:01.999+00:00"
    assert utc_millis(86_400.25) == "1970-01-02T00:00:00.250+00:00"
    assert utc_millis(1.0) == "1970-01-01T00:00:01.000+00:00"
