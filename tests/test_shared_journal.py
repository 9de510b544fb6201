"""The shared journal's fence and the leader's lease, against a real PostgreSQL: a write after a takeover is
refused and never on record; a leader gives up before its lease ends; an outage delays writes, loses none."""

from __future__ import annotations

import asyncio
import time

import pytest

from semookii_bridge import wire
from semookii_bridge.commands import Manual
from semookii_bridge.ha import Leadership
from semookii_bridge.journal import Entry
from semookii_bridge.journal_shared import Fence, Fenced, SharedJournal
from semookii_bridge.postgres import Postgres

from .postgres import Postgres as Server


def entry(rid: str) -> Entry:
    return Entry(request_id=rid, target_kind="group", target_id="1", command=wire.encode(Manual(action="stop")),
                 status="queued", received_at=1.0, deadline=61.0)  # fmt: skip


async def connected(url: str) -> Postgres:
    db = Postgres(url)
    await db.setup()
    return db


async def test_a_write_after_a_takeover_is_fenced_and_never_on_record(pg_url: str) -> None:
    """Leader a (epoch 1) writes; its lease runs out and b takes over (epoch 2); a's next write raises Fenced
    in durable(), calls on_fenced, and is not in the database."""
    db_a, db_b = await connected(pg_url), await connected(pg_url)
    epoch = await db_a.acquire("a", 0.5)
    assert epoch == 1
    fenced: list[Fenced] = []
    journal = SharedJournal(db_a, await db_a.load(), fence=Fence(1, "a"), on_fenced=fenced.append)
    journal.insert(entry("before"))
    await journal.durable()
    await asyncio.sleep(0.6)
    assert await db_b.acquire("b", 5.0) == 2
    journal.insert(entry("after"))
    with pytest.raises(Fenced):
        await journal.durable()
    assert len(fenced) == 1
    rows = {e.request_id for e in (await db_b.load()).rows}
    assert rows == {"before"}
    await db_a.close()
    await db_b.close()


async def test_every_durable_checks_the_fence_even_with_nothing_to_write(pg_url: str) -> None:
    """durable() with no pending write still fails once the lease is gone (a poll's token waits there)."""
    db = await connected(pg_url)
    assert await db.acquire("a", 0.3) == 1
    journal = SharedJournal(db, await db.load(), fence=Fence(1, "a"))
    await journal.durable()
    await asyncio.sleep(0.4)
    with pytest.raises(Fenced):
        await journal.durable()
    await db.close()


async def test_a_standby_takes_over_only_once_the_lease_has_expired(pg_url: str) -> None:
    """a holds a 1 s lease and stops renewing: b, trying all along, gets it 1 s after a's last renewal, never
    before, with the next epoch."""
    db_a, db_b = await connected(pg_url), await connected(pg_url)
    assert await db_a.acquire("a", 1.0) == 1
    taken = time.monotonic()
    b = Leadership(db_b, "b", 1.0, on_lost=lambda _r: None)
    assert await asyncio.wait_for(b.acquire(), 5) == 2
    assert time.monotonic() - taken >= 0.9 and b.role == "leader"
    await b.release()
    await db_a.close()
    await db_b.close()


class HangingRenewals:
    """A lease store whose renewals never answer (the database cut off)."""

    async def acquire(self, holder: str, lease: float) -> int | None:
        return 7

    async def renew(self, epoch: int, holder: str, lease: float) -> bool:
        await asyncio.sleep(3600)
        return True

    async def release(self, epoch: int, holder: str) -> None:
        return None


async def test_a_leader_that_cannot_renew_gives_up_before_its_lease_ends() -> None:
    """Renewals hang: on_lost comes before `lease` seconds have passed since the lease was taken (by the
    process's own clock), so it stops before anyone else could take over."""
    lost: list[float] = []
    started = time.monotonic()
    leader = Leadership(HangingRenewals(), "a", 1.2, on_lost=lambda _r: lost.append(time.monotonic() - started))
    await leader.acquire()
    await asyncio.sleep(1.5)
    assert len(lost) == 1 and lost[0] < 1.2 and not leader.valid()
    await leader.release()


async def test_writes_wait_out_a_database_outage_and_none_is_lost() -> None:
    """The server stops with a write pending: durable() waits; the server starts again: the write is on record."""
    server = Server()
    server.start()
    try:
        db = await connected(server.url)
        journal = SharedJournal(db, await db.load())
        journal.insert(entry("kept"))
        await journal.durable()
        server.stop()
        journal.insert(entry("during"))
        waiting = asyncio.ensure_future(journal.durable())
        await asyncio.sleep(1.0)
        assert not waiting.done()
        server.start()
        await asyncio.wait_for(waiting, 15)
        reader = await connected(server.url)
        assert {e.request_id for e in (await reader.load()).rows} == {"kept", "during"}
        await reader.close()
        await db.close()
    finally:
        server.remove()
