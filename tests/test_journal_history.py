"""The finished commands a new leader holds only as keys: lookups, the prune cut, the wire format."""

from __future__ import annotations

import struct

from semookii_bridge.journal.history import History, Keys, from_network, key_of


def keys(*pairs: tuple[str, float]) -> Keys:
    ordered = sorted((key_of(text), at) for text, at in pairs)
    raw_keys = b"".join(struct.pack(">q", k) for k, _ in ordered)
    raw_at = b"".join(struct.pack(">d", at) for _, at in ordered)
    return Keys(from_network(raw_keys, "q"), from_network(raw_at, "d"))  # type: ignore[arg-type]


def test_a_key_is_found_only_when_received_since_the_cut() -> None:
    """has() finds a key received at or after `since`, and not one received before it or never seen."""
    k = keys(("a", 10.0), ("b", 20.0), ("c", 30.0))
    assert k.has(key_of("b"), 20.0) and not k.has(key_of("b"), 20.5)
    assert not k.has(key_of("zzz"), 0.0) and len(k) == 3


def test_history_forgets_what_a_prune_cuts_and_drops_the_keys_once_all_are_old() -> None:
    """After prune(t) a request or delivery received before t is unknown; once all are older, the keys go."""
    history = History(keys(("r1", 10.0), ("r2", 50.0)), keys(("d1", 10.0)))
    assert history.has_request("r1") and history.has_delivery("x", "d1")
    history.prune(30.0)
    assert not history.has_request("r1") and history.has_request("r2") and not history.has_delivery("d1")
    assert len(history) == 2
    history.prune(60.0)
    assert len(history) == 0 and not history.has_request("r2")


def test_the_key_is_the_first_eight_bytes_of_md5_as_postgresql_computes_it() -> None:
    """key_of reads md5's first 8 bytes as a signed big-endian integer, as the bit(64)::bigint cast does."""
    assert key_of("a") == int("0cc175b9c0f1b6a8", 16)
    assert key_of("b") == int("92eb5ffee6ae2fec", 16) - 2**64


def test_keys_that_arrive_out_of_order_are_sorted_with_their_instants() -> None:
    """sorted_keys keeps sorted input as it is and sorts unsorted input pairwise, so lookups still find it."""
    from array import array

    from semookii_bridge.journal.history import sorted_keys

    k = sorted_keys(array("q", [5, 1, 3]), array("d", [50.0, 10.0, 30.0]))
    assert list(k.keys) == [1, 3, 5] and list(k.received) == [10.0, 30.0, 50.0]
    assert k.has(5, 50.0) and not k.has(5, 51.0)
