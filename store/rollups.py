"""The rollups: on plain PostgreSQL, the ``rollup_hourly`` and ``rollup_daily`` tables
refreshed from raw rows for the hours the ingest writer noted in ``rollup_dirty``;
on TimescaleDB, continuous aggregates refreshed on demand (their policies do the rest).

The writer of ``rollup_hourly`` and ``rollup_daily`` (plain path: refresh and
retention) and the claimer of ``rollup_dirty``; it also notes every hour with rows
dirty when an upgrade carries rows over (``note_every_hour``, for ``store.layout``)
and fills the rollups once that upgrade has committed (``after_upgrade``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg import sql
from psycopg.pq import TransactionStatus

from core.errors import ConfigurationError
from core.storage import StorageConfig, StoragePath
from store.rows import Conn
from store.storage_config import (
    advance_watermark,
    backfill_pending,
    read_config,
    set_backfill_pending,
)

__all__ = [
    "REFRESH_HOURS_PER_STEP",
    "after_upgrade",
    "expire_rollups",
    "note_every_hour",
    "rebuild_rollups",
    "refresh_rollups",
]

_LOG = logging.getLogger(__name__)


# Claims the complete hours noted dirty, recomputes their hourly rollups from raw
# rows and the local days containing them (per community zone) from the hourly
# rollups, and moves the watermark. One transaction: a crash loses no claim. A
# batch committing meanwhile leaves a dirty row this snapshot did not claim, so
# its hour is computed again on the next pass.
_CLAIM = """
WITH claimed AS (DELETE FROM rollup_dirty WHERE hour < %(upto)s RETURNING hour)
SELECT DISTINCT hour FROM claimed ORDER BY hour
"""
_REFRESH_HOURLY = """
DELETE FROM rollup_hourly WHERE bucket = ANY(%(hours)s);
INSERT INTO rollup_hourly (device_id, metric, bucket, count, sum, min, max, last, last_ts)
SELECT device_id, metric, date_trunc('hour', ts, 'UTC'), count(*), sum(value),
       min(value), max(value), (array_agg(value ORDER BY ts DESC))[1], max(ts)
  FROM readings
 WHERE ts >= %(first)s AND ts < %(last)s AND date_trunc('hour', ts, 'UTC') = ANY(%(hours)s)
 GROUP BY 1, 2, 3;
DELETE FROM rollup_daily AS r
 USING (SELECT DISTINCT z.time_zone, (h AT TIME ZONE z.time_zone)::date AS day
          FROM (SELECT DISTINCT time_zone FROM communities) AS z,
               unnest(%(hours)s::timestamptz[]) AS h) AS d
 WHERE r.time_zone = d.time_zone AND r.day = d.day;
INSERT INTO rollup_daily
       (device_id, metric, day, time_zone, bucket, count, sum, min, max, last, last_ts)
SELECT h.device_id, h.metric, d.day, d.time_zone, d.day::timestamp AT TIME ZONE d.time_zone,
       sum(h.count), sum(h.sum), min(h.min), max(h.max),
       (array_agg(h.last ORDER BY h.last_ts DESC))[1], max(h.last_ts)
  FROM (SELECT DISTINCT z.time_zone, (h AT TIME ZONE z.time_zone)::date AS day
          FROM (SELECT DISTINCT time_zone FROM communities) AS z,
               unnest(%(hours)s::timestamptz[]) AS h) AS d
  JOIN communities AS c ON c.time_zone = d.time_zone
  JOIN devices AS v ON v.community_id = c.id
  JOIN rollup_hourly AS h ON h.device_id = v.id
   AND h.bucket >= d.day::timestamp AT TIME ZONE d.time_zone
   AND h.bucket < (d.day + 1)::timestamp AT TIME ZONE d.time_zone
 GROUP BY 1, 2, 3, 4, 5;
"""
# The script above, one statement at a time: the extended protocol that binds
# parameters takes a single statement.
_REFRESH_STEPS = tuple(s for s in _REFRESH_HOURLY.split(";\n") if s.strip())
# Hours refreshed per transaction: a backlog (days of downtime, a bulk load) is
# worked through in steps that each hold few locks for long.
REFRESH_HOURS_PER_STEP = 24
# Neither the migrations' key nor maintenance's.
_REFRESH_LOCK_KEY = 0x5C0_0003


def refresh_rollups(conn: Conn, now: datetime | None = None) -> int:
    """Plain path: materialise the complete hours noted dirty; return how many.

    ``conn`` must not be in a transaction (each step commits). Hours of the
    current hour on are left to the raw side of the views until complete.
    """
    upto = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    done = 0
    while True:
        with conn.transaction():
            # One refresher at a time: two recomputing one hour would collide on its key.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REFRESH_LOCK_KEY,))
            hours = [row[0] for row in conn.execute(_CLAIM, {"upto": upto})]
            if hours:
                # The rest of a long backlog goes back for the next step.
                rest, hours = hours[REFRESH_HOURS_PER_STEP:], hours[:REFRESH_HOURS_PER_STEP]
                if rest:
                    conn.cursor().executemany(
                        "INSERT INTO rollup_dirty (hour) VALUES (%s)", [(h,) for h in rest]
                    )
                params = {
                    "hours": hours,
                    "first": hours[0],
                    "last": hours[-1] + timedelta(hours=1),
                }
                for statement in _REFRESH_STEPS:
                    conn.execute(statement.encode(), params)
                done += len(hours)
            else:
                advance_watermark(conn, upto)
                return done


def rebuild_rollups(conn: Conn, start: datetime, end: datetime, now: datetime | None = None) -> int:
    """Recompute the rollups of ``[start, end)`` from the raw rows, on either path; for
    rows that reached ``readings`` around the ingest writer (a bulk COPY). Returns the
    hours recomputed.

    The rows must be committed and ``conn`` idle (no transaction open): TimescaleDB
    refreshes a continuous aggregate only outside a transaction, and the plain path
    commits hour by hour, so both paths ask the same of the caller.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ConfigurationError(
            "rebuild_rollups needs committed rows and a connection outside a transaction"
        )
    autocommit = conn.autocommit
    conn.autocommit = True  # each step commits on its own, on both paths
    try:
        config = read_config(conn)
        if config.path is StoragePath.TIMESCALEDB:
            return _refresh_aggregates(conn, config, start, end, now or datetime.now(UTC))
        conn.execute(
            "INSERT INTO rollup_dirty (hour)"
            " SELECT DISTINCT date_trunc('hour', ts, 'UTC') FROM readings"
            " WHERE ts >= %s AND ts < %s",
            (start, end),
        )
        return refresh_rollups(conn, now)
    finally:
        conn.autocommit = autocommit


def _refresh_aggregates(
    conn: Conn, config: StorageConfig, start: datetime, end: datetime, now: datetime
) -> int:
    """TimescaleDB: refresh both continuous aggregates over the range.

    A refresh materialises only the buckets wholly inside its window, so the window
    is widened by a day each way (the daily buckets follow the community's day, not
    UTC's); its start never reaches back past the policies' own start, where raw
    chunks may already be dropped and a refresh would empty their buckets.
    A day bucket not wholly inside the window stays as it was: its rows past the
    aggregate's watermark are read raw, and the daily policy refreshes it within
    the hour.
    """
    floor = now - config.rollup_refresh_start
    first = max(start - timedelta(days=1), floor).replace(minute=0, second=0, microsecond=0)
    # Never past the current hour: what is newer the views read raw (real-time
    # aggregates), as the policies leave it (end_offset one hour).
    last = min(end + timedelta(days=1), now).replace(minute=0, second=0, microsecond=0)
    if first >= last:
        return 0
    refresh = sql.SQL("CALL refresh_continuous_aggregate({}, %s, %s)")
    conn.execute(refresh.format(sql.Literal("rollup_hourly")), (first, last))
    # TimescaleDB refuses a window that holds no whole bucket: refresh the daily
    # aggregate over the days wholly inside, in the aggregate's own zone.
    zone = ZoneInfo(config.daily_time_zone)
    local_first = first.astimezone(zone)
    day_first = local_first.replace(hour=0, minute=0, second=0, microsecond=0)
    if day_first < local_first:
        day_first += timedelta(days=1)
    day_last = last.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    if day_first < day_last:
        conn.execute(refresh.format(sql.Literal("rollup_daily")), (day_first, day_last))
    return int((last - first) / timedelta(hours=1))


def note_every_hour(conn: Conn) -> None:
    """Note every hour with rows dirty (rows carried over by an upgrade on the plain
    path); ``after_upgrade`` computes them."""
    conn.execute(
        "INSERT INTO rollup_dirty (hour)"
        " SELECT DISTINCT date_trunc('hour', ts, 'UTC') FROM readings"
    )


def after_upgrade(conn: Conn) -> None:
    """Work that cannot run in a migration's transaction; ``conn`` is in autocommit.

    Fill the rollups from rows carried over: continuous aggregates on
    TimescaleDB, the rollup tables on plain PostgreSQL.
    """
    pending = backfill_pending(conn)
    if pending is None or not pending[0]:
        return
    if pending[1] == StoragePath.POSTGRESQL.value:
        refresh_rollups(conn)
        set_backfill_pending(conn, False)
        return
    for view in ("rollup_hourly", "rollup_daily"):
        refresh = "CALL refresh_continuous_aggregate({}, NULL, now() - INTERVAL '1 hour')"
        conn.execute(sql.SQL(refresh).format(sql.Literal(view)))
    set_backfill_pending(conn, False)
    _LOG.info("continuous aggregates filled from existing readings")


def expire_rollups(conn: Conn, table: str, before: datetime) -> int:
    """Plain path: delete ``table``'s rollups (hourly or daily) older than ``before``;
    how many."""
    query = sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(table))
    return conn.execute(query, (before,)).rowcount
