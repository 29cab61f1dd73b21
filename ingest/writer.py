"""One transaction per batch: binary COPY into a staging table, then a few
set-based statements over it: insert the rows into ``readings``; move ``latest``
(newest value per device and metric, by device time) with one UPDATE, and an
upsert only for keys it does not hold yet; move each device's ``last_seen`` with
one UPDATE folded per device; on plain PostgreSQL, note the hours written into
for the rollup refresh (on TimescaleDB, continuous aggregates track that). The
insert runs first without a conflict clause, the cheap common case; when that
hits the natural key (a redelivered or resent message) it runs again with ``ON
CONFLICT DO NOTHING``, so a duplicate never makes a second row.

Those statements run in one call to a function the writer's session defines for
itself (``pg_temp.sc_merge_staged``, made at connect time from the constants below),
so a batch costs five round trips (BEGIN, COPY and its end, the call, COMMIT)
instead of eleven: at 2,000 msgs/s a batch is a few dozen messages, and each round
trip is two wake-ups (ours, then the server's) that a loaded machine delays by
milliseconds, and a wait for the GIL on our side.

Server CPU per 1,000 messages of 3 metrics (bench/writer.py, 10,000 devices):
the earlier single statement, with an ``ON CONFLICT DO UPDATE`` of ``latest``
from the insert's ``RETURNING`` and a second COPY for last-seen, cost about a
quarter more at batches of 2,000 messages and twice as much at batches of 200.

A batch the database refuses for any reason but being unreachable is bisected
(``_write_bisecting``): halves are retried under savepoints until the messages at fault
stand alone; they become dead letters with the database's error text and the
rest commit. Being unreachable (``is_outage``) is told apart by error class and
raised as ``ServiceUnavailable``: the caller pauses and retries, nothing is lost.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from core.clock import CLOCK_TOLERANCE_S
from core.errors import RejectReason, ServiceUnavailable
from core.models import Reading
from core.storage import StoragePath
from ingest.batch import Accepted, Batch, DeadLetter, WriteResult
from store.dead_letters import NewDeadLetter, insert_dead_letters
from store.pools import DatabasePool, PoolWatch, is_outage
from store.storage_config import read_config

__all__ = ["BatchWriter", "MergeStatements", "is_outage", "merge_statements"]

_LOG = logging.getLogger(__name__)
# Times a batch the server rolled back (deadlock, serialisation failure) is written again.
ROLLBACK_ATTEMPTS = 3

_STAGE_DDL: tuple[str, ...] = (
    "CREATE TEMP TABLE IF NOT EXISTS readings_stage "
    "(LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS seen_stage "
    "(id text, seen timestamptz, received timestamptz) ON COMMIT DELETE ROWS",
)
# The writer's statements join one batch (a few to a few thousand rows) with tables
# of every device: ``latest``, ``devices``. An index lookup per batch row is always
# the right plan, but the staging tables have no statistics and the planner chose
# hash joins that read the whole of those tables for every batch: four fifths of
# the server's CPU per message at batches of 200 messages, 10,000 devices. The
# writer's own connection therefore plans without hash and merge joins.
_SESSION = (
    "SET enable_hashjoin = off",
    "SET enable_mergejoin = off",
)
_COLUMNS = "(device_id, metric, ts, value, seq, received_at)"
_COPY = f"COPY readings_stage {_COLUMNS} FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ["text", "text", "timestamptz", "float8", "int8", "timestamptz"]
# Without a conflict clause first, the cheap common case: a unique violation means
# the batch holds a redelivered or resent row, and only then is ON CONFLICT taken.
_INSERT = b"INSERT INTO readings SELECT * FROM readings_stage"
_INSERT_SAFE = _INSERT + b" ON CONFLICT DO NOTHING"
# Clock clamp (core.clock): a device clock running ahead must not pin ``latest`` or
# ``last_seen`` in the future, where correct readings would never replace them.
# Statements are put together from these constants with str.replace (no user input).
_TOLERANCE = f"interval '{CLOCK_TOLERANCE_S} seconds'"
_FRESH_TS = "LEAST(ts, received_at + {tolerance})".replace("{tolerance}", _TOLERANCE)
_STAGED = "SELECT device_id, metric, {fresh} AS fresh, value, received_at FROM readings_stage"
_STAGED = _STAGED.replace("{fresh}", _FRESH_TS)
# The newest staged row per key (a batch may hold a key more than once). Byte order
# ("C") is all DISTINCT ON needs, and sorts faster than the database's collation.
_NEWEST = """
SELECT DISTINCT ON (device_id COLLATE "C", metric COLLATE "C") * FROM ({staged}) AS s
 ORDER BY device_id COLLATE "C", metric COLLATE "C", fresh DESC""".replace("{staged}", _STAGED)
# ``latest`` is the newest value per device and metric by (clamped) device time. A
# plain UPDATE of the keys it holds is the common case, and the cheapest: no
# sort, no speculative insert, no join with ``devices``. The upsert runs only when
# the UPDATE fell short (see _MERGE_FUNCTION).
# ``community_id`` is not updated: a device never changes community (the registry
# offers no such change), so the value copied on insert stays right.
_LATEST_UPDATE = """
UPDATE latest AS l SET ts = s.fresh, value = s.value, received_at = s.received_at
  FROM ({source}) AS s
 WHERE l.device_id = s.device_id AND l.metric = s.metric AND s.fresh > l.ts"""
_LATEST_UPSERT = """
INSERT INTO latest AS l (device_id, metric, community_id, ts, value, received_at)
SELECT s.device_id, s.metric, d.community_id, s.fresh, s.value, s.received_at
  FROM ({newest}) AS s JOIN devices AS d ON d.id = s.device_id
    ON CONFLICT (device_id, metric) DO UPDATE
   SET ts = excluded.ts, value = excluded.value, received_at = excluded.received_at
 WHERE excluded.ts > l.ts""".replace("{newest}", _NEWEST)
# Plain PostgreSQL only: the hours this batch wrote into, for the rollup refresh
# (store.rollups.refresh_rollups). One or two rows per batch instead of an
# upsert per reading: upserting rollups per batch cost ~20 us a reading here. An
# hour noted for a duplicate row costs a refresh that changes nothing.
_DIRTY = (
    b"INSERT INTO rollup_dirty (hour)"
    b" SELECT DISTINCT date_trunc('hour', ts, 'UTC') FROM readings_stage"
)


@dataclass(frozen=True, slots=True)
class MergeStatements:
    """The statements that move the staged rows into storage, for one storage path."""

    insert: bytes  # returns nothing; its rowcount is the rows inserted
    latest_update: bytes
    latest_upsert: bytes
    dirty: bytes | None  # plain PostgreSQL only: continuous aggregates track their own


def merge_statements(path: StoragePath, *, on_conflict: bool) -> MergeStatements:
    return MergeStatements(
        insert=_INSERT_SAFE if on_conflict else _INSERT,
        latest_update=_LATEST_UPDATE.replace("{source}", _STAGED).encode(),
        latest_upsert=_LATEST_UPSERT.encode(),
        dirty=_DIRTY if path is StoragePath.POSTGRESQL else None,
    )


_EVENT = (
    "INSERT INTO device_events (device_id, ts, event, data, seq, received_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
# Dead letters keep at most this much of a payload (the payload limit by default);
# the real size is stored beside it.
DEAD_PAYLOAD_BYTES = 64 * 1024
# Messages without readings (events) that move a device's "last seen".
_COPY_SEEN = "COPY seen_stage (id, seen, received) FROM STDIN (FORMAT BINARY)"
_SEEN_TYPES = ["text", "timestamptz", "timestamptz"]
# Device time only moves forward: a late reading never makes "last seen" go back.
# Rows already up to date are left alone, which spares the table a new version.
# Read from the staged readings (folded per device here, not in Python) and from
# seen_stage, which holds the batch's other messages that carry a device time.
_LAST_SEEN = (
    """
UPDATE devices AS d
   SET last_seen = GREATEST(d.last_seen, v.seen),
       last_received_at = GREATEST(d.last_received_at, v.received)
  FROM (SELECT id, max(seen) AS seen, max(received) AS received
          FROM (SELECT device_id AS id, {fresh} AS seen, received_at AS received
                  FROM readings_stage
                 UNION ALL
                SELECT id, LEAST(seen, received + {tolerance}), received
                  FROM seen_stage) AS t
         GROUP BY id) AS v
 WHERE d.id = v.id
   AND (d.last_seen IS NULL OR v.seen > d.last_seen
        OR d.last_received_at IS NULL OR v.received > d.last_received_at)
""".replace("{fresh}", _FRESH_TS)
    .replace("{tolerance}", _TOLERANCE)
    .encode()
)
# The statements above in one call: a batch's merge is one round trip. It is the
# session's own function (pg_temp, made with the staging tables at connect time), so
# it is always the writer's current text, whatever the schema version. The plpgsql
# block with an exception handler is a subtransaction, as the savepoint was: a
# redelivered row (unique violation) undoes the plain insert, and the insert with
# ``ON CONFLICT DO NOTHING`` runs instead. Parameters: rows staged in readings_stage,
# whether to note dirty hours (plain PostgreSQL), whether seen_stage holds rows. Returns
# the readings inserted.
_MERGE_CALL = b"SELECT pg_temp.sc_merge_staged(%s, %s, %s)"
_MERGE_FUNCTION = (
    """
CREATE OR REPLACE FUNCTION pg_temp.sc_merge_staged(_staged bigint, _dirty boolean, _others boolean)
RETURNS bigint LANGUAGE plpgsql AS $merge$
DECLARE
    _written bigint := 0;
    _moved bigint := 0;
BEGIN
    IF _staged > 0 THEN
        BEGIN
            {insert};
            GET DIAGNOSTICS _written = ROW_COUNT;
        EXCEPTION WHEN unique_violation THEN
            {insert_safe};
            GET DIAGNOSTICS _written = ROW_COUNT;
        END;
        -- Each row moved its key forward: nothing is left for the upsert. A key
        -- latest lacks, a late row (older than the stored one) or a key the batch
        -- holds twice (the UPDATE applies one of its rows, not the newest
        -- necessarily) falls short, and the upsert of each key's newest row
        -- completes the work.
        {latest_update};
        GET DIAGNOSTICS _moved = ROW_COUNT;
        IF _moved < _staged THEN
            {latest_upsert};
        END IF;
        IF _dirty THEN
            {dirty};
        END IF;
    END IF;
    IF _staged > 0 OR _others THEN
        {last_seen};
    END IF;
    RETURN _written;
END
$merge$""".replace("{insert_safe}", _INSERT_SAFE.decode())
    .replace("{insert}", _INSERT.decode())
    .replace("{latest_update}", _LATEST_UPDATE.replace("{source}", _STAGED))
    .replace("{latest_upsert}", _LATEST_UPSERT)
    .replace("{dirty}", _DIRTY.decode())
    .replace("{last_seen}", _LAST_SEEN.decode())
)
_STAGE_DDL += (_MERGE_FUNCTION,)
# Status ordering is the broker's order (our receive time), never the device's
# ``ts``: a Will carries the time it was set at connect, older than the online
# status that followed, yet it is the newer news. The guard keeps a status
# redelivered after a newer one (a reconnect of ours) from flipping the device.
_STATUS = """
UPDATE devices SET online = %s, status_at = %s
 WHERE id = %s AND (status_at IS NULL OR status_at <= %s)
"""


def _text(value: str) -> str:
    """Text PostgreSQL takes: no NUL, no lone surrogates (a dead letter must always insert)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class BatchWriter:
    """Writes batches over a connection pool of its own (``store.pools``): each batch
    takes a checked connection, and a lost one is replaced by the pool."""

    def __init__(
        self,
        *,
        url: str,
        worker: str,
        dead_payload_bytes: int = DEAD_PAYLOAD_BYTES,
        store_refused: bool = True,
        watch: PoolWatch | None = None,
    ) -> None:
        self.worker = worker
        self.dead_payload_bytes = dead_payload_bytes
        # Off for replays: a message refused again already has its dead letter.
        self.store_refused = store_refused
        self._merge_fast = merge_statements(StoragePath.POSTGRESQL, on_conflict=False)
        self._merge_safe = merge_statements(StoragePath.POSTGRESQL, on_conflict=True)
        # One commit thread writes: one connection (store.pools.DatabasePool).
        self._pool = DatabasePool(url, name="writer", configure=self._configure, watch=watch)

    def open(self) -> None:
        """Start connecting (a service's start); the first write does it otherwise."""
        self._pool.open()

    def close(self) -> None:
        self._pool.close()

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A checked connection of the writer's pool, set up as the writer's (the
        worker's own bookkeeping, benchmarks); ``ServiceUnavailable`` if none comes."""
        return self._pool.connection()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Each new connection: the writer's planner settings and staging tables, and
        the statements of the storage path it finds."""
        for ddl in (*_SESSION, *_STAGE_DDL):
            conn.execute(ddl)
        path = read_config(conn).path
        conn.commit()
        self._merge_fast = merge_statements(path, on_conflict=False)
        self._merge_safe = merge_statements(path, on_conflict=True)

    def write(self, batch: Batch) -> WriteResult:
        """Commit the batch; raise ``ServiceUnavailable`` if the database is unreachable."""
        with self._pool.connection() as conn:
            return self._write(conn, batch)

    def _write(self, conn: psycopg.Connection[tuple[object, ...]], batch: Batch) -> WriteResult:
        try:
            for attempt in itertools.count(1):
                try:
                    return self._commit(conn, batch)
                except psycopg.Error as exc:
                    # A deadlock with another writer of the same device rows (or a
                    # serialisation failure): the server undid the whole transaction
                    # and the link is fine, so the batch is simply written again.
                    if not _rolled_back(exc) or attempt >= ROLLBACK_ATTEMPTS:
                        raise
                    _LOG.warning("batch rolled back by the server (%s); writing it again", exc)
            raise AssertionError("unreachable")
        except psycopg.Error as exc:
            if is_outage(exc):  # a broken connection goes back to the pool, which replaces it
                raise ServiceUnavailable("database", str(exc).strip()) from exc
            raise

    # -- internals --------------------------------------------------------

    def _commit(self, conn: psycopg.Connection[tuple[object, ...]], batch: Batch) -> WriteResult:
        try:
            with conn.transaction():
                return self._write_all(conn, batch.accepted, batch.dead_letters)
        except Exception as exc:
            if not _refusal(exc):
                raise
            _LOG.warning("batch refused (%s); bisecting it to find the messages at fault", exc)
            with conn.transaction():
                return self._write_bisecting(conn, batch)

    def _write_all(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        accepted: Sequence[Accepted],
        dead: Sequence[DeadLetter],
    ) -> WriteResult:
        rows = [r for a in accepted for r in a.readings]
        # Messages with readings move "last seen" from readings_stage; the others
        # that carry a device time (events) are staged in seen_stage.
        others = sorted(
            (a.device_id, a.device_time, a.received_at)
            for a in accepted
            if not a.readings and a.device_time is not None and a.received_at is not None
        )
        events = 0
        event_rows = [
            (e.device_id, e.ts, e.event, Jsonb(e.data), e.seq, e.received_at)
            for a in accepted
            if (e := a.event) is not None
        ]
        with conn.cursor() as cur:
            written = self._merge(cur, rows, others)
            if event_rows:
                cur.executemany(_EVENT, event_rows)
                events = max(cur.rowcount, 0)
            if dead:
                limit = self.dead_payload_bytes
                insert_dead_letters(
                    cur,
                    [
                        NewDeadLetter(
                            d.received_at,
                            _text(d.topic),
                            d.payload[:limit],
                            len(d.payload) if len(d.payload) > limit else None,
                            d.reason,
                            _text(d.detail),
                            self.worker,
                        )
                        for d in dead
                    ],
                )
            self._statuses(cur, accepted)
        return WriteResult(written, len(rows) - written, events, list(dead))

    def _merge(
        self,
        cur: psycopg.Cursor[tuple[object, ...]],
        rows: list[Reading],
        others: list[tuple[str, datetime, datetime]],
    ) -> int:
        """Stage the readings (and the other messages' device times), then move them
        into storage in one call; return how many rows were new."""
        if not rows and not others:
            return 0
        if rows:
            with cur.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        if others:
            with cur.copy(_COPY_SEEN) as copy:
                copy.set_types(_SEEN_TYPES)
                for other in others:
                    copy.write_row(other)
        dirty = self._merge_fast.dirty is not None
        return _count(cur.execute(_MERGE_CALL, (len(rows), dirty, bool(others))).fetchone())

    def _statuses(
        self, cur: psycopg.Cursor[tuple[object, ...]], accepted: Sequence[Accepted]
    ) -> None:
        # By device for a stable lock order; the sort is stable, so one device's
        # statuses keep the broker's order and the last one received wins.
        statuses = sorted(
            (a.status for a in accepted if a.status is not None), key=lambda s: s.device_id
        )
        for s in statuses:
            cur.execute(_STATUS, (s.online, s.received_at, s.device_id, s.received_at))

    # -- bisection ------------------------------------------------------------

    def _write_bisecting(
        self, conn: psycopg.Connection[tuple[object, ...]], batch: Batch
    ) -> WriteResult:
        """Commit what the database takes; the messages it refuses become dead letters."""
        written = WriteResult(0, 0, 0, [])
        refused: list[DeadLetter] = []
        pending = [batch.accepted]
        while pending:
            items = pending.pop()
            try:
                with conn.transaction():  # a savepoint
                    part = self._write_all(conn, items, [])
            except Exception as exc:
                if not _refusal(exc):
                    raise
                if len(items) == 1:
                    refused.append(_refused(items[0], exc))
                else:
                    middle = len(items) // 2
                    pending += [items[middle:], items[:middle]]  # the first half first
                continue
            written = WriteResult(
                written.rows_written + part.rows_written,
                written.rows_duplicate + part.rows_duplicate,
                written.events_written + part.events_written,
                [],
            )
        if refused:
            _LOG.warning("%d message(s) refused by the database, now dead letters", len(refused))
        dead = [*batch.dead_letters, *refused]
        self._write_all(conn, [], dead if self.store_refused else batch.dead_letters)
        return WriteResult(
            written.rows_written, written.rows_duplicate, written.events_written, dead
        )


def _refusal(exc: Exception) -> bool:
    """The database (or the driver's conversion on the way to it) refused the data.

    Anything but an outage: an unknown refusal is still a refusal, and bisection
    finds the message behind it. Outages and rollbacks the server chose
    (deadlocks) are the caller's to retry.
    """
    if is_outage(exc):
        return False
    return not (isinstance(exc, psycopg.Error) and _rolled_back(exc))


def _rolled_back(exc: psycopg.Error) -> bool:
    """Deadlock detected or serialization failure: the server's doing, not the data's."""
    return exc.sqlstate in ("40P01", "40001")


def _count(row: tuple[object, ...] | None) -> int:
    return int(str(row[0])) if row is not None else 0


def _refused(item: Accepted, exc: Exception) -> DeadLetter:
    primary = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
    detail = (primary or f"{type(exc).__name__}: {exc}").strip()
    return DeadLetter(
        topic=item.topic,
        payload=item.payload,
        reason=RejectReason.DATABASE_REFUSED.value,
        detail=detail[:500],
        received_at=item.received_at or datetime.now(UTC),
    )
