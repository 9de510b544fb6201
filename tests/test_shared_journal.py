"""The shared journal's fence and the leader's lease, against a real PostgreSQL: a write after a takeover is
refused and never on record; a leader gives up before its lease ends; an outage delays writes, loses none."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time

import pytest

from semookii_bridge.budget.ratelimit import BucketState
from semookii_bridge.journal.lease import Leadership
from semookii_bridge.journal.postgres import Postgres
from semookii_bridge.journal.shared import SharedJournal
from semookii_bridge.journal.store import Fence, Fenced
from semookii_bridge.journal.timeline import Anchor

from .support.journal import entry
from .support.postgres import Postgres as Server


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
    process's own clock), so it stops before anyone else could take over; not before its margin, though."""
    lost: list[float] = []
    started = time.monotonic()
    leader = Leadership(HangingRenewals(), "a", 1.2, on_lost=lambda _r: lost.append(time.monotonic() - started))
    await leader.acquire()
    await asyncio.sleep(1.5)
    assert len(lost) == 1 and 1.2 - 0.2 - 0.1 < lost[0] < 1.2 and not leader.valid()
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
        journal.record_calls("2026-11-29", 9)
        journal.record_bucket(BucketState(2.0, 50.0, 0.0, 0.0))
        journal.save_clock_anchor(Anchor(None, 1.0, 60.0))
        waiting = asyncio.ensure_future(journal.durable())
        await asyncio.sleep(1.0)
        assert not waiting.done()
        server.start()
        await asyncio.wait_for(waiting, 15)
        reader = await connected(server.url)
        loaded = await reader.load()
        assert {e.request_id for e in loaded.rows} == {"kept", "during"}
        assert loaded.calls == {"2026-11-29": 9} and loaded.bucket == BucketState(2.0, 50.0, 0.0, 0.0)
        assert loaded.anchor == Anchor(None, 1.0, 60.0)
        await reader.close()
        await db.close()
    finally:
        server.remove()


class CountingLease:
    """A lease store that grants after `refusals` refusals, records each renewal, and renews while `held`."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals, self.held = refusals, True
        self.renewals: list[tuple[int, str, float]] = []
        self.released: list[tuple[int, str]] = []

    async def acquire(self, holder: str, lease: float) -> int | None:
        if self.refusals:
            self.refusals -= 1
            if self.refusals % 2:
                raise OSError("database away")
            return None
        return 3

    async def renew(self, epoch: int, holder: str, lease: float) -> bool:
        self.renewals.append((epoch, holder, lease))
        return self.held

    async def release(self, epoch: int, holder: str) -> None:
        self.released.append((epoch, holder))


async def test_a_leader_that_renews_stays_the_leader_and_says_so() -> None:
    """Renewals succeed: after three lease lengths it is still the leader and valid, having renewed with its
    epoch, name and lease about every third of it; on_role saw standby then leader."""
    store, roles, lost = CountingLease(), [], []
    leader = Leadership(store, "a", 0.3, on_lost=lost.append, on_role=lambda r, e: roles.append((r, e)))
    assert await leader.acquire() == 3
    await asyncio.sleep(0.9)
    assert leader.valid() and leader.role == "leader" and lost == [] and leader.takeovers == 1
    assert 6 <= len(store.renewals) <= 10 and set(store.renewals) == {(3, "a", 0.3)}
    assert roles == [("standby", None), ("leader", 3)]
    await leader.release()
    assert store.released == [(3, "a")] and roles[-1] == ("offline", 3) and not leader.valid()


class SlowRenewals(CountingLease):
    """Renewals that answer after `delay` seconds (a database or a process under load), when each was asked."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay, self.asked = delay, list[float]()

    async def renew(self, epoch: int, holder: str, lease: float) -> bool:
        self.asked.append(time.monotonic())
        await asyncio.sleep(self.delay)
        return await super().renew(epoch, holder, lease)


async def test_a_slow_renewal_does_not_push_the_next_one_later() -> None:
    """Renewals take a quarter of the lease: they are still asked every third of it, so the slow answers do not
    eat the room the lease leaves for a stalled process."""
    store = SlowRenewals(0.3)
    leader = Leadership(store, "a", 1.2, on_lost=lambda _r: None)
    await leader.acquire()
    await asyncio.sleep(2.6)
    gaps = [b - a for a, b in itertools.pairwise(store.asked)]
    await leader.release()
    assert len(gaps) >= 4 and sum(gaps) / len(gaps) < 0.55, gaps


async def test_a_candidate_keeps_trying_through_refusals_and_errors() -> None:
    """The lease is held elsewhere (None) or the database fails (an error): it tries again every third of the
    lease and leads once granted."""
    store = CountingLease(refusals=4)
    leader = Leadership(store, "b", 0.3, on_lost=lambda _r: None)
    started = time.monotonic()
    assert await asyncio.wait_for(leader.acquire(), 5) == 3
    assert time.monotonic() - started >= 4 * 0.1 * 0.9
    await leader.release()


async def test_a_leader_whose_lease_was_taken_over_stops_at_the_next_renewal() -> None:
    """A renewal answered 'not held' (another holder): on_lost at once, role offline, not valid."""
    store, lost = CountingLease(), []
    leader = Leadership(store, "a", 0.6, on_lost=lost.append)
    await leader.acquire()
    store.held = False
    await asyncio.sleep(0.4)
    assert lost == ["the lease was taken over"] and leader.role == "offline" and not leader.valid()
    await leader.release()
    assert store.released == []


async def test_a_takeover_waits_for_a_fenced_write_in_progress_and_sees_it(pg_url: str) -> None:
    """A leader's write passed the fence and is still open when its lease expires: the standby's takeover waits
    for it (the fence's share lock on the lease row), so the write is in the journal the new leader loads."""
    import asyncpg  # type: ignore[import-untyped]

    from semookii_bridge.journal.postgres import _FENCE

    db_a, db_b = await connected(pg_url), await connected(pg_url)
    assert await db_a.acquire("a", 0.5) == 1
    writer = await asyncpg.connect(pg_url)
    try:
        async with writer.transaction():
            assert await writer.fetchval(_FENCE, 1, "a") == 1
            await asyncio.sleep(0.6)  # the lease expires while the write is open
            takeover = asyncio.ensure_future(db_b.acquire("b", 5.0))
            await asyncio.sleep(0.5)
            waited = not takeover.done()
            await writer.execute("INSERT INTO commands (request_id, target_kind, command, status, received_at, "
                                 "deadline, updated_at) VALUES ('late', 'group', '\\x00', 'sending', 1, 2, 1)")  # fmt: skip
        assert await takeover == 2
    finally:
        await writer.close()
    assert waited, "the takeover did not wait for the write that passed the fence"
    assert "late" in {e.request_id for e in (await db_b.load()).rows}
    await db_a.close()
    await db_b.close()


async def test_the_leader_renews_its_lease_while_its_own_fenced_write_is_open(pg_url: str) -> None:
    """The leader's journal write holds the fence while it waits on the leader's busy loop (a QoS 0 storm): its
    renewal on the lease connection goes through at once instead of waiting for the write, which lost the lease."""
    import asyncpg

    from semookii_bridge.journal.postgres import _FENCE

    db = await connected(pg_url)
    assert await db.acquire("a", 2.0) == 1
    writer = await asyncpg.connect(pg_url)
    try:
        async with writer.transaction():
            assert await writer.fetchval(_FENCE, 1, "a") == 1
            assert await asyncio.wait_for(db.renew(1, "a", 2.0), 1.0)
    finally:
        await writer.close()
        await db.close()


async def test_a_database_unreachable_at_start_is_waited_for_with_a_message(caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL is down when the bridge starts: it logs `journal_unreachable` (the URL without its password)
    at each try, with growing pauses, instead of a traceback; once the server is up, the journal opens."""
    from contextlib import AsyncExitStack

    import msgspec

    from semookii_bridge.config import BridgeConfig
    from semookii_bridge.ha.standby import open_postgres_journal

    server = Server()
    url = server.url.replace("postgres@", "postgres:s3cret@")
    cfg = msgspec.convert({"journal": {"url": url}, "http": {"enabled": False}}, BridgeConfig)
    caplog.set_level("INFO", logger="semookii_bridge.ha.standby")
    try:
        async with AsyncExitStack() as stack:
            opening = asyncio.ensure_future(open_postgres_journal(cfg, stack))
            while len([r for r in caplog.records if "journal_unreachable" in r.getMessage()]) < 2:
                assert not opening.done()
                await asyncio.sleep(0.1)
            server.start()
            shared = await asyncio.wait_for(opening, 40)
            assert shared.journal is not None
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert "s3cret" not in "\n".join(lines) and any("journal_shared" in line for line in lines)
    pauses = [line.rpartition("retry_in=")[2] for line in lines if "journal_unreachable" in line]
    assert pauses[:2] == ["1", "2"], pauses


async def test_a_large_batchs_callbacks_run_in_order_with_the_loop_turning_between_slices(pg_url: str) -> None:
    """1,000 commands written in one batch: their after-commit callbacks run in write order, one added while they
    run comes after them, and the event loop turns while they run (the lease's renewal is not held up)."""
    db = await connected(pg_url)
    journal = SharedJournal(db, await db.load())
    order: list[int] = []
    seen_between: list[int] = []

    async def ticker() -> None:
        while len(order) < 1001:
            if 0 < len(order) < 1000:
                seen_between.append(len(order))
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    def publish(i: int) -> None:  # a state's publish takes about 0.2 ms
        order.append(i)
        time.sleep(0.0002)
        if i == 5:  # nothing pending to write: it waits behind the others
            journal.after_commit(lambda: order.append(1000))

    for i in range(1000):
        journal.insert(entry(f"many-{i}"))
        journal.after_commit(functools.partial(publish, i))
    await journal.durable()
    await asyncio.wait_for(ticking, 10)
    assert order == list(range(1001)) and seen_between, seen_between[:5]
    await journal.aclose()
    await db.close()


async def test_durable_wakes_at_its_flush_not_behind_the_batchs_callbacks(pg_url: str) -> None:
    """A stop waits in durable() for its write while a storm's 1,000 state publishes (0.2 ms each) are due: it
    wakes at its flush, before those publishes have all run; they all run afterwards, in order."""
    db = await connected(pg_url)
    journal = SharedJournal(db, await db.load())
    order: list[int] = []

    def publish(i: int) -> None:
        order.append(i)
        time.sleep(0.0002)

    for i in range(1000):
        journal.insert(entry(f"storm-{i}"))
        journal.after_commit(functools.partial(publish, i))
    await journal.durable()
    woke_after = len(order)
    for _ in range(500):
        if len(order) == 1000:
            break
        await asyncio.sleep(0.01)
    assert woke_after < 1000 and order == list(range(1000)), woke_after
    await journal.aclose()
    await db.close()
