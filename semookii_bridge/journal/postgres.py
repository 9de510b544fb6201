"""PostgreSQL through asyncpg: the shared journal's tables, its fenced writes, and the leader's lease.

The only module that imports asyncpg (as `mqtt/` is for paho and `api/` for aiohttp): the rest of the code
sees `Snapshot`, `Batch` and plain values. Every write of the shared journal is one transaction that first
checks, under a share lock on the lease row, that the writer still holds the lease with its epoch (the
fencing token); a takeover's update of that row waits for such a transaction and every later one fails.
Times of the lease are the database's (`clock_timestamp()`), so the hosts' clocks do not matter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec

from ..budget.ratelimit import BucketState
from ..control.statuses import OPEN_STATUSES
from ..ha.fleet import Member
from .history import History, from_network, key_sql, sorted_keys
from .protocol import COLUMNS, PLAN_COLUMNS, Entry, PlanRecord
from .schema import create_tables
from .store import Batch, Fence, Fenced, Snapshot, StoreUnavailable
from .timeline import Anchor, since_boot

log = logging.getLogger(__name__)

SCHEMA = (
    create_tables("postgres")
    + """
CREATE INDEX IF NOT EXISTS commands_received_at ON commands (received_at);
ALTER TABLE commands ADD COLUMN IF NOT EXISTS request_key BIGINT GENERATED ALWAYS AS (KEY(request_id)) STORED;
ALTER TABLE commands ADD COLUMN IF NOT EXISTS delivery_key BIGINT GENERATED ALWAYS AS (KEY(delivery_hash)) STORED;
CREATE INDEX IF NOT EXISTS commands_finished_requests ON commands (request_key) INCLUDE (received_at, updated_at)
    WHERE announced = 1;
CREATE INDEX IF NOT EXISTS commands_finished_deliveries ON commands (delivery_key) INCLUDE (received_at, updated_at)
    WHERE announced = 1 AND delivery_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS ha_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL, holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL, since TIMESTAMPTZ NOT NULL
);
INSERT INTO ha_lease VALUES (1, 0, '', '-infinity', now()) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    instance TEXT PRIMARY KEY, name TEXT NOT NULL, ha BOOLEAN NOT NULL, settings TEXT NOT NULL,
    joined DOUBLE PRECISION NOT NULL, seen DOUBLE PRECISION NOT NULL, broker_ok BOOLEAN NOT NULL DEFAULT true,
    api_ok BOOLEAN NOT NULL DEFAULT true
);
""".replace("KEY(request_id)", key_sql("request_id")).replace("KEY(delivery_hash)", key_sql("delivery_hash"))
)
"""The finished rows' 64-bit keys (`history.py`) are kept by the database and indexed, so a takeover
reads them in order without hashing or sorting anything."""

_UPSERT = (
    f"INSERT INTO commands ({','.join(COLUMNS)}) VALUES ({','.join(f'${i + 1}' for i in range(len(COLUMNS)))}) "  # noqa: S608
    f"ON CONFLICT (request_id) DO UPDATE SET {','.join(f'{c} = EXCLUDED.{c}' for c in COLUMNS[1:])}"
)
_SAVE_PLAN = (
    f"INSERT INTO plans VALUES ({','.join(f'${i + 1}' for i in range(len(PLAN_COLUMNS)))}) ON CONFLICT (target) "  # noqa: S608
    f"DO UPDATE SET {','.join(f'{c} = EXCLUDED.{c}' for c in PLAN_COLUMNS[1:])}"
)
"""A target's plan record, replacing the one it had."""
_FENCE = (
    "SELECT 1 FROM ha_lease WHERE id = 1 AND epoch = $1 AND holder = $2 AND expires_at > clock_timestamp() "
    "FOR KEY SHARE"
)
"""A fenced write holds the lease row's weakest lock: the holder's own renewal (an update of `expires_at`) does
not wait for it, while a takeover, which locks the row `FOR UPDATE` first, waits until the write is done."""
_TAKE_ROW = "SELECT 1 FROM ha_lease WHERE id = 1 FOR UPDATE"
"""A takeover's first step: waits for every fenced write in progress (their `FOR KEY SHARE`) to end."""
_TAKE = (
    "UPDATE ha_lease SET epoch = epoch + 1, holder = $1, since = clock_timestamp(), "
    "expires_at = clock_timestamp() + $2 * interval '1 second' "
    "WHERE id = 1 AND expires_at <= clock_timestamp() RETURNING epoch"
)
_END_EXPIRED = (
    "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a JOIN ha_lease l ON l.id = 1 "
    "WHERE l.expires_at <= clock_timestamp() AND l.holder <> '' AND a.application_name = $1 || l.holder "
    "AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL"
)
_ROWS = f"SELECT {','.join(COLUMNS)} FROM commands WHERE status = ANY($1::text[]) OR announced = 0"  # noqa: S608
"""The rows a takeover loads whole: open commands and finished ones whose state is not yet announced."""
_KEYS = (
    "SELECT string_agg(int8send(k), ''::bytea), string_agg(float8send(received_at), ''::bytea), max(updated_at) "
    "FROM (SELECT {col} AS k, received_at, updated_at FROM commands WHERE announced = 1 AND {col} IS NOT NULL "
    "ORDER BY {col}) s"
)
"""The announced (so finished) rows' keys in key order, read from the partial index alone: no sort, no heap.
PostgreSQL aggregates a sorted subquery's rows in its order; `_history` checks that it did."""
_SWEEP = (
    "DELETE FROM commands WHERE request_id IN (SELECT request_id FROM commands WHERE received_at < $1 "
    "AND NOT status = ANY($2::text[]) LIMIT $3)"
)
SWEEP_ROWS = 5000
"""Finished rows deleted per flush at most: a backlog is cleared over several flushes, none of them long."""
ROWS_PER_STATEMENT = 500
"""Rows encoded per statement of a flush: asyncpg encodes a statement's rows without yielding, so a storm's
batch of thousands is sent in slices and the event loop turns between them (the lease's renewal runs there)."""
"""Finished rows deleted per flush at most: a backlog is cleared over several flushes, none of them long."""
_TRANSIENT = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
"""What drops the connection and is retried: the network, the server going away or restarting (it says so with
an error, e.g. `AdminShutdownError`), a connection left mid-operation. Logged with the server's text."""


APPLICATION = "semookii-bridge/"
"""Each session's `application_name` is this and the instance's `ha.name`: a takeover finds the old leader's."""


def session_settings(lease: float, name: str = "") -> dict[str, str]:
    """Server settings of a bridge's sessions: named after the instance, so a takeover can end the sessions of a
    leader whose lease expired; a transaction left idle ends after half a lease; a silent peer is noticed within
    about a lease (keepalives, TCP_USER_TIMEOUT)."""
    half = max(100, int(lease * 500))
    return {
        "application_name": APPLICATION + name,
        "idle_in_transaction_session_timeout": str(half),
        "tcp_user_timeout": str(2 * half),
        "tcp_keepalives_idle": str(max(1, int(lease / 3))),
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "2",
    }


class Postgres:
    """One connection to the journal's database, opened again when it breaks."""

    def __init__(self, url: str, *, timeout: float = 5.0, settings: dict[str, str] | None = None) -> None:
        self.url, self.timeout, self.settings = url, timeout, settings
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        """One operation at a time: an asyncpg connection runs one query at a time."""

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                self._conn = await asyncpg.connect(
                    self.url, timeout=self.timeout, command_timeout=self.timeout, server_settings=self.settings
                )
            except (*_TRANSIENT, TimeoutError) as exc:
                raise StoreUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None
        return self._conn

    async def _run(self, work: Any) -> Any:
        """Run `work(connection)`; a broken connection is dropped and reported as StoreUnavailable."""
        async with self._lock:
            conn = await self._connection()
            try:
                return await work(conn)
            except (*_TRANSIENT, TimeoutError) as exc:
                await self.close()
                raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from None

    async def setup(self) -> None:
        """Create the tables (idempotent, serialised by an advisory lock so two bridges may start together)."""

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(4157)")
                await conn.execute(SCHEMA)

        await self._run(work)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()

    # ---- the journal --------------------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """What a takeover needs, read in one transaction: the live rows whole, the finished ones as keys."""

        async def work(conn: asyncpg.Connection) -> Snapshot:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                # decoding many rows between statements is not a stall: this read holds no lock a takeover needs
                await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                rows = await conn.fetch(_ROWS, list(OPEN_STATUSES))
                history = await _history(conn)
                calls = await conn.fetch("SELECT day, used FROM api_calls")
                bucket = await conn.fetchrow("SELECT tokens, stamp, paused_until, banned_until FROM limiter")
                anchor = await conn.fetchrow('SELECT boot_id, "offset", high FROM clock')
                plans = await conn.fetch(f"SELECT {','.join(PLAN_COLUMNS)} FROM plans")  # noqa: S608
                now = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
                read_at = since_boot()
            return Snapshot(
                rows=[msgspec.convert(dict(r), Entry) for r in rows],
                calls={r["day"]: r["used"] for r in calls},
                bucket=BucketState(*bucket) if bucket else None,
                anchor=Anchor(*anchor) if anchor else None,
                now=float(now),
                read_at=read_at,
                history=history,
                plans=[msgspec.convert(dict(r), PlanRecord) for r in plans],
            )

        result: Snapshot = await self._run(work)
        return result

    async def recall(self, request_id: str) -> Entry | None:
        """One command's row, whole (a finished one the leader holds only as a key)."""
        sql = f"SELECT {','.join(COLUMNS)} FROM commands WHERE request_id = $1"  # noqa: S608
        row = await self._run(lambda conn: conn.fetchrow(sql, request_id))
        return msgspec.convert(dict(row), Entry) if row is not None else None

    async def recall_call(self, column: str, value: str) -> list[Entry]:
        """The rows of one control call, by `command_id` or `task_id`."""
        assert column in ("command_id", "task_id")
        sql = f"SELECT {','.join(COLUMNS)} FROM commands WHERE {column} = $1"  # noqa: S608
        rows = await self._run(lambda conn: conn.fetch(sql, value))
        return [msgspec.convert(dict(r), Entry) for r in rows]

    async def flush(self, batch: Batch, fence: Fence | None) -> int:
        """Write `batch` in one transaction, after checking the fence; raises Fenced if it no longer holds.
        Returns how many finished rows received before `batch.sweep_before` were deleted (at most SWEEP_ROWS)."""

        async def work(conn: asyncpg.Connection) -> int:
            swept = 0
            async with conn.transaction():
                if fence is not None and await conn.fetchval(_FENCE, fence.epoch, fence.holder) is None:
                    raise Fenced(f"epoch {fence.epoch} of {fence.holder} no longer holds the lease")
                if batch.sweep_before is not None:
                    status = await conn.execute(_SWEEP, batch.sweep_before, OPEN_STATUSES, SWEEP_ROWS)
                    swept = int(status.split()[-1])
                if batch.deleted:
                    await conn.execute("DELETE FROM commands WHERE request_id = ANY($1::text[])", batch.deleted)
                for start in range(0, len(batch.rows), ROWS_PER_STATEMENT):
                    await conn.executemany(_UPSERT, batch.rows[start : start + ROWS_PER_STATEMENT])
                await _flush_small(conn, batch)
            return swept

        return int(await self._run(work))

    # ---- the lease ----------------------------------------------------------------------------------

    async def acquire(self, holder: str, lease: float) -> int | None:
        """Take the lease if it has expired (the database's clock), bumping the epoch; the new epoch or None.

        First the expired holder's open transactions are ended: a leader stopped or cut off inside its fence
        transaction (even mid-pipeline, where no idle timeout applies) would otherwise hold the lease row's lock
        until TCP gives up on it. Its uncommitted writes roll back, so it never gets `sending` on record."""
        await self._run(lambda conn: conn.execute(_END_EXPIRED, APPLICATION))

        async def work(conn: asyncpg.Connection) -> Any:
            async with conn.transaction():
                await conn.execute(_TAKE_ROW)
                return await conn.fetchval(_TAKE, holder, lease)

        epoch = await self._run(work)
        return int(epoch) if epoch is not None else None

    async def renew(self, epoch: int, holder: str, lease: float) -> bool:
        """Extend a lease still held; False when it was lost (expired, or taken over)."""
        sql = (
            "UPDATE ha_lease SET expires_at = clock_timestamp() + $3 * interval '1 second' WHERE id = 1 "
            "AND epoch = $1 AND holder = $2 AND expires_at > clock_timestamp() RETURNING 1"
        )
        return await self._run(lambda conn: conn.fetchval(sql, epoch, holder, lease)) is not None

    async def release(self, epoch: int, holder: str) -> None:
        """Give the lease up at once (a graceful stop), so a standby need not wait for it to expire."""
        sql = "UPDATE ha_lease SET expires_at = clock_timestamp() WHERE id = 1 AND epoch = $1 AND holder = $2"
        await self._run(lambda conn: conn.execute(sql, epoch, holder))

    async def lease_holder(self) -> tuple[int, str, float]:
        """(epoch, holder, seconds until it expires; negative once expired)."""
        sql = "SELECT epoch, holder, extract(epoch FROM expires_at - clock_timestamp())::float8 FROM ha_lease"
        row = await self._run(lambda conn: conn.fetchrow(sql))
        return int(row[0]), str(row[1]), float(row[2]) if row[2] is not None else -1.0

    async def next_value(self, key: str) -> int:
        """A counter that grows by one per call (the Sparkplug bdSeq), kept with the journal."""
        sql = "INSERT INTO kv VALUES ($1, 0) ON CONFLICT (key) DO UPDATE SET value = kv.value + 1 RETURNING value"
        return int(await self._run(lambda conn: conn.fetchval(sql, key)))

    # ---- the fleet ----------------------------------------------------------------------------------

    async def register(self, member: Member) -> float:
        """Add or refresh this bridge's registration (the heartbeat); when it joined, by the database's clock."""
        sql = (
            "INSERT INTO members VALUES ($1, $2, $3, $4, extract(epoch FROM clock_timestamp()), "
            "extract(epoch FROM clock_timestamp()), $5, $6) ON CONFLICT (instance) DO UPDATE SET "
            "seen = EXCLUDED.seen, broker_ok = $5, api_ok = $6 RETURNING joined"
        )
        m, settings = member, msgspec.json.encode(member.settings).decode()
        return float(
            await self._run(lambda conn: conn.fetchval(sql, m.instance, m.name, m.ha, settings, m.broker_ok, m.api_ok))
        )

    async def members(self, window: float) -> list[Member]:
        """The bridges whose heartbeat is younger than `window` seconds (older rows are deleted after a day)."""
        sql = (
            "SELECT instance, name, ha, settings, joined, seen, broker_ok, api_ok FROM members "
            "WHERE seen > extract(epoch FROM clock_timestamp()) - $1"
        )

        async def work(conn: asyncpg.Connection) -> list[Any]:
            await conn.execute("DELETE FROM members WHERE seen < extract(epoch FROM clock_timestamp()) - 86400")
            return list(await conn.fetch(sql, window))

        rows = await self._run(work)
        return [Member(r[0], r[1], r[2], msgspec.json.decode(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    async def leave(self, instance: str) -> None:
        """Remove this bridge's registration (a graceful stop), so a restart need not wait for it to go stale."""
        await self._run(lambda conn: conn.execute("DELETE FROM members WHERE instance = $1", instance))


async def _history(conn: asyncpg.Connection) -> History:
    """The announced (finished) rows as sorted keys of their request ids and deliveries."""
    await conn.execute("SET LOCAL work_mem = '64MB'")  # if the index is not used, the sort stays in memory
    found, latest = [], None
    for column in ("request_key", "delivery_key"):
        raw = await conn.fetchrow(_KEYS.format(col=column))
        found.append(sorted_keys(from_network(raw[0], "q"), from_network(raw[1], "d")))  # type: ignore[arg-type]
        latest = raw[2] if latest is None else latest
    return History(found[0], found[1], latest=latest)


async def _flush_small(conn: asyncpg.Connection, batch: Batch) -> None:
    """The small tables of a batch: the day's calls, the limiter, the timeline's anchor, the plans."""
    if batch.calls:
        await conn.executemany(
            "INSERT INTO api_calls VALUES ($1, $2) ON CONFLICT (day) DO UPDATE SET used = $2", list(batch.calls.items())
        )
    if batch.bucket is not None:
        b = batch.bucket
        await conn.execute(
            "INSERT INTO limiter VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET "
            "tokens = $1, stamp = $2, paused_until = $3, banned_until = $4",
            *b,
        )
    if batch.anchor is not None:
        a = batch.anchor
        await conn.execute(
            "INSERT INTO clock VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET boot_id = $1, "
            '"offset" = $2, high = $3',
            *msgspec.structs.astuple(a),
        )
    if batch.plans:
        await conn.executemany(_SAVE_PLAN, [msgspec.structs.astuple(p) for p in batch.plans])
