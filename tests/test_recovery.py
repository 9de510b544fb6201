"""Recovery from the journal alone (no broker): what a restart publishes for each journaled state."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import msgspec

from semookii_bridge.bridge import Bridge
from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.config import BridgeConfig
from semookii_bridge.errors import ErrorInfo
from semookii_bridge.interface import wire
from semookii_bridge.interface.payloads import Incoming
from semookii_bridge.journal.sqlite import Journal

from .support.doubles import NoApi, Recorder
from .support.journal import entry_now


def bridge_on(journal: Journal, publisher: Recorder) -> Bridge:
    limiter = RateLimiter(TokenBucket(0, 1))
    return Bridge(BridgeConfig(), api=NoApi(), publisher=publisher, journal=journal, limiter=limiter)  # type: ignore[arg-type]


def test_unacknowledged_terminal_state_is_announced_again(tmp_path: Path) -> None:
    """A `completed` the broker never acknowledged (bridge killed) is published again, results included."""
    journal = Journal(tmp_path / "j.db")
    journal.insert(entry_now("done", "completed", command_id="7", task_id="t", results=wire.encode({"SW1": "success"})))
    journal.insert(entry_now("told", "failed", error=wire.encode(ErrorInfo(code="api_error", message="no")), announced=1))
    publisher = Recorder()
    bridge_on(journal, publisher).recover()
    [(topic, state, retain)] = publisher.sent
    assert topic == "vpp/group/42/state" and retain
    assert (state["request_id"], state["status"], state["results"]) == ("done", "completed", {"SW1": "success"})
    assert state["command_id"] == "7" and state["task_id"] == "t"


def test_sending_at_crash_is_reported_ambiguous_once(tmp_path: Path) -> None:
    """A command journaled as `sending` when the bridge died becomes `failed`/ambiguous, and stays so."""
    journal = Journal(tmp_path / "j.db")
    journal.insert(entry_now("mid-air", "sending"))
    publisher = Recorder()
    bridge_on(journal, publisher).recover()
    [(_, state, _)] = publisher.sent
    assert state["status"] == "failed" and state["error"]["code"] == "ambiguous"
    assert journal.get("mid-air").status == "failed"  # type: ignore[union-attr]


def test_prune_forgets_finished_commands_after_the_dedup_window(tmp_path: Path) -> None:
    """Finished commands older than the window are forgotten; open ones are kept whatever their age."""
    journal = Journal(tmp_path / "j.db")
    old = entry_now("old-done", "completed")
    old.received_at -= 7200
    stuck = entry_now("old-open", "accepted")
    stuck.received_at -= 7200
    for e in (old, stuck, entry_now("new-done", "completed")):
        journal.insert(e)
    assert journal.prune(time.time() - 3600) == 1
    assert journal.get("old-done") is None and journal.get("old-open") and journal.get("new-done")


def test_repeated_request_id_is_refused_by_the_journal(tmp_path: Path) -> None:
    """The journal's primary key is the duplicate check: a second insert raises DuplicateRequest."""
    import pytest

    from semookii_bridge.journal.protocol import DuplicateRequest

    journal = Journal(tmp_path / "j.db")
    journal.insert(entry_now("once", "queued"))
    with pytest.raises(DuplicateRequest):
        journal.insert(entry_now("once", "queued"))


STOP_SET = Incoming(topic="vpp/group/42/set", payload=b'{"type":"manual","action":"stop"}', mid=7)


def test_a_redelivered_command_is_not_queued_again(tmp_path: Path) -> None:
    """The broker redelivers (DUP) a command the bridge journaled but never acked: it is recognised and dropped."""
    journal = Journal(tmp_path / "j.db")
    publisher = Recorder()
    bridge = bridge_on(journal, publisher)
    asyncio.run(bridge.handle(STOP_SET))
    asyncio.run(bridge.handle(msgspec.structs.replace(STOP_SET, dup=True)))
    assert journal.count() == 1 and [s["status"] for _, s, _ in publisher.sent] == ["queued"]


def test_a_redelivery_journaled_by_an_earlier_version_is_recognised(tmp_path: Path) -> None:
    """Journals from before the packet-id-first key hold the bare digest; a redelivery still matches it."""
    journal = Journal(tmp_path / "j.db")
    digest = hashlib.sha256(b"vpp/group/42/set\x007\x00" + STOP_SET.payload).hexdigest()[:32]
    journal.insert(entry_now("from-before", "accepted", delivery_hash=digest))
    publisher = Recorder()
    asyncio.run(bridge_on(journal, publisher).handle(msgspec.structs.replace(STOP_SET, dup=True)))
    assert journal.count() == 1 and publisher.sent == []


def test_a_merged_call_is_tracked_once_after_a_restart(tmp_path: Path) -> None:
    """Tracked commands that shared one control call are polled as that one call again, not once each."""
    journal = Journal(tmp_path / "j.db")
    for rid, target in (("m1", "SN1"), ("m2", "SN2")):
        row = entry_now(rid, "accepted", command_id="77", track_until=time.time() + 60)
        row.target_kind, row.target_id = "inverter", target
        journal.insert(row)
    journal.insert(entry_now("alone", "dispatched", command_id="78", task_id="t", track_until=time.time() + 60))
    bridge = bridge_on(journal, Recorder())
    bridge.recover()
    assert bridge.lifecycle.tracking == 2
    assert sorted(call for _, call, _ in bridge.lifecycle.polls.schedule._heap) == ["77", "78"]


def test_a_duplicate_of_a_command_on_the_wire_repeats_queued_not_sending(tmp_path: Path) -> None:
    """`sending` is a journal status, never published: a repeat of such a command says `queued`, its last
    published state, with duplicate true and not retained."""
    journal = Journal(tmp_path / "j.db")
    journal.insert(entry_now("mid-air", "sending"))
    publisher = Recorder()
    bridge = bridge_on(journal, publisher)
    bridge._repeat("mid-air", bridge.lifecycle.topics.parse("vpp/group/42/set").target,  # type: ignore[union-attr]
                   Incoming(topic="vpp/group/42/set", payload=b"{}"))  # fmt: skip
    [(topic, state, retain)] = publisher.sent
    assert (topic, state["status"], state["duplicate"], retain) == ("vpp/group/42/state", "queued", True, False)


def test_a_recovered_command_the_configuration_now_forbids_fails_unsent(tmp_path: Path) -> None:
    """A queued command journaled under an older configuration, for a group that `commands.allow_groups` no longer
    allows: recovery fails it with `not_allowed` instead of sending it."""
    from semookii_bridge.config import CommandsConfig

    journal = Journal(tmp_path / "j.db")
    journal.insert(entry_now("old", "queued"))
    publisher = Recorder()
    config = BridgeConfig(commands=CommandsConfig(allow_groups=["7"]))
    bridge = Bridge(config, api=NoApi(), publisher=publisher, journal=journal,  # type: ignore[arg-type]
                    limiter=RateLimiter(TokenBucket(0, 1)))  # fmt: skip
    bridge.recover()
    [(_, state, _)] = publisher.sent
    assert state["status"] == "failed" and state["error"]["code"] == "not_allowed"
    assert "re-checked after a restart or takeover" in state["error"]["message"]
    assert bridge.dispatcher.queued == 0
