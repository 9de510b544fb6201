"""The one backoff rule shared by API retries, MQTT reconnects and result polling."""

from __future__ import annotations

from semookii_bridge.api.retry import RetryPolicy
from semookii_bridge.common.backoff import Backoff


def test_waits_double_from_initial_up_to_maximum() -> None:
    """Attempt 1 waits `initial`, each next one twice as long, never more than `maximum`."""
    backoff = Backoff(0.5, 3.0)
    assert [backoff.wait(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_after_continues_a_carried_wait() -> None:
    """A loop that carries its current wait gets the same sequence from `after`."""
    backoff = Backoff(0.5, 3.0)
    waits = [backoff.initial]
    for _ in range(4):
        waits.append(backoff.after(waits[-1]))
    assert waits == [backoff.wait(n) for n in range(1, 6)]


def test_jitter_adds_at_most_its_seconds() -> None:
    """Jitter spreads retries by up to `jitter` seconds above the plain wait, never below it."""
    backoff = Backoff(1.0, 8.0, jitter=0.25)
    waits = [backoff.wait(2) for _ in range(200)]
    assert all(2.0 <= w <= 2.25 for w in waits) and len(set(waits)) > 1


def test_api_retries_wait_by_the_same_rule() -> None:
    """RetryPolicy's waits are the backoff rule's (no jitter, scale 1)."""
    policy = RetryPolicy(initial_wait=0.25, max_wait=1.0, jitter=0.0)
    assert [policy.wait_for(n, None) for n in range(1, 5)] == [0.25, 0.5, 1.0, 1.0]
