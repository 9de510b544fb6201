"""The timestamp every state message carries."""

from __future__ import annotations

from semookii_bridge.interface.payloads import utc_now_text


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    """Seconds and milliseconds come from one rounding, so they never disagree across a second."""
    assert utc_now_text(0) == "1970-01-01T00:00:00.000Z"
    assert utc_now_text(1.9995) == "1970-01-01T00:00:01.999Z"
    assert utc_now_text(1795651200.25) == "2026-11-26T00:00:00.250Z"
