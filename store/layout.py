"""Builds the storage of ``core.storage`` on TimescaleDB or on plain PostgreSQL.

``install`` runs inside migration 0002's transaction (``store.schema``). It picks
the path once, per database:

1. ``smartcommunity.storage`` (a database setting: ``ALTER DATABASE db SET
   smartcommunity.storage = 'postgresql'``) forces a path;
2. otherwise TimescaleDB when the extension is installed, or available *and*
   preloaded (``shared_preload_libraries``; without that ``CREATE EXTENSION``
   fails);
3. otherwise plain PostgreSQL.

Existing rows are carried over in both cases. Continuous aggregates are created
``WITH NO DATA`` (a refresh cannot run inside a transaction); ``after_upgrade``
fills them from existing rows once the migration has committed.

It is the one writer of ``storage_config``: the path, the rollup watermark, the
retention (``set_retention``, for ``db retention``) and the plain path's last
maintenance pass (``record_maintenance``, for ``ingest.maintenance``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from core.errors import ConfigurationError
from core.storage import PARTITIONED_TABLES, StorageConfig, StoragePath

__all__ = [
    "FORCE_SETTING",
    "after_upgrade",
    "detect_path",
    "install",
    "read_config",
    "rebuild_rollups",
    "record_maintenance",
    "refresh_rollups",
    "set_retention",
    "timescaledb_available",
]

_LOG = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

FORCE_SETTING = "smartcommunity.storage"

_CONFIG = (
    "SELECT path, chunk_interval, compress_after, raw_retention, hourly_retention,"
    " daily_retention, partitions_ahead, daily_time_zone FROM storage_config"
)

# -- plain PostgreSQL ------------------------------------------------------------------------

_PLAIN_TABLES = """
ALTER TABLE readings RENAME TO readings_v1;
ALTER INDEX readings_pkey RENAME TO readings_v1_pkey;
CREATE TABLE readings (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    seq         bigint,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) PARTITION BY RANGE (ts);
-- The safety net: a reading for a day without a partition lands here and the
-- maintenance task moves it into its day's partition on its next run.
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

ALTER TABLE device_events RENAME TO device_events_v1;
ALTER INDEX device_events_pkey RENAME TO device_events_v1_pkey;
CREATE TABLE device_events (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    event       text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    seq         bigint,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, ts, event)
) PARTITION BY RANGE (ts);
CREATE TABLE device_events_default PARTITION OF device_events DEFAULT;

-- Rollups of whole hours, refreshed from raw rows by refresh_rollups (the ingest
-- maintenance task) for the hours the writer noted in rollup_dirty: like a
-- continuous aggregate. "last" is the value with the newest device time (last_ts).
CREATE TABLE rollup_hourly (
    device_id text NOT NULL,
    metric    text NOT NULL,
    bucket    timestamptz NOT NULL,
    count     bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    last      double precision NOT NULL,
    last_ts   timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
) WITH (fillfactor = 70);
-- Retention deletes by bucket; rows arrive roughly in bucket order, so a BRIN
-- index finds them for a few kilobytes.
CREATE INDEX rollup_hourly_bucket_brin ON rollup_hourly USING brin (bucket);

-- Keyed by the local day of the device's community (communities.time_zone),
-- summed from rollup_hourly.
CREATE TABLE rollup_daily (
    device_id text NOT NULL,
    metric    text NOT NULL,
    day       date NOT NULL,
    time_zone text NOT NULL,
    bucket    timestamptz NOT NULL,
    count     bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    last      double precision NOT NULL,
    last_ts   timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, day)
) WITH (fillfactor = 70);
CREATE INDEX rollup_daily_bucket_brin ON rollup_daily USING brin (bucket);

-- Hours that received rows since their rollup was computed; one row per batch
-- and hour, no index: the refresh reads and empties it every few seconds.
CREATE TABLE rollup_dirty (hour timestamptz NOT NULL);

-- Creates the UTC-day partition of parent holding day, moving its rows out of
-- the default partition. Writers wait meanwhile (readers do not), so no row can
-- reach the default partition between the move and the attach.
CREATE FUNCTION sc_ensure_day_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', parent);
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
    -- Lets ATTACH skip scanning the new table.
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (ts >= %L AND ts < %L)',
                   part, part || '_bounds', lo, hi);
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *)'
                   ' INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    RETURN true;
END
$fn$;

-- Drops the day partitions of parent that end on or before cutoff, and deletes
-- rows older than cutoff from its default partition. Returns the partitions dropped.
CREATE FUNCTION sc_drop_day_partitions(parent text, cutoff date) RETURNS text[]
LANGUAGE plpgsql AS $fn$
DECLARE
    dropped text[] := '{}';
    part text;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
         WHERE i.inhparent = parent::regclass
           AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
           AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= cutoff
         ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        dropped := dropped || part;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE ts < %L', parent || '_default',
                   cutoff::timestamp AT TIME ZONE 'UTC');
    RETURN dropped;
END
$fn$;
"""

_PLAIN_CARRY_OVER = """
SELECT sc_ensure_day_partition(%(table)s, day)
  FROM (SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS day FROM {old}
         WHERE ts >= %(cutoff)s
        UNION
        SELECT generate_series(%(today)s::date - 1, %(today)s::date + %(ahead)s::integer,
                               '1 day')::date)
       AS days
 ORDER BY day;
INSERT INTO {new} SELECT * FROM {old};
DROP TABLE {old};
"""

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
# Hours refreshed per transaction: a backlog (days of downtime, a bulk load) is
# worked through in steps that each hold few locks for long.
REFRESH_HOURS_PER_STEP = 24
# Neither the migrations' key nor maintenance's.
_REFRESH_LOCK_KEY = 0x5C0_0003

# -- TimescaleDB -----------------------------------------------------------------------------

_TIMESCALE_TABLES = """
SELECT create_hypertable('readings', 'ts', chunk_time_interval => %(chunk)s::interval,
                         if_not_exists => true, migrate_data => true);
SELECT create_hypertable('device_events', 'ts', chunk_time_interval => %(chunk)s::interval,
                         if_not_exists => true, migrate_data => true);
-- One compressed segment per device; inside it rows run by metric then time, so
-- a metric's values sit together (delta-of-delta and Gorilla encoding pay most).
ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'device_id',
                          timescaledb.compress_orderby = 'metric, ts DESC');
ALTER TABLE device_events SET (timescaledb.compress,
                               timescaledb.compress_segmentby = 'device_id',
                               timescaledb.compress_orderby = 'ts DESC, event');
SELECT add_compression_policy('readings', compress_after => %(compress)s::interval,
                              if_not_exists => true);
SELECT add_compression_policy('device_events', compress_after => %(compress)s::interval,
                              if_not_exists => true);
SELECT add_retention_policy('readings', drop_after => %(raw)s::interval, if_not_exists => true);
SELECT add_retention_policy('device_events', drop_after => %(raw)s::interval,
                            if_not_exists => true);
"""
# Created WITH NO DATA: a continuous aggregate cannot be filled inside a transaction.
# materialized_only = false: queries add the not yet materialised recent rows.
_CAGG_HOURLY = """
CREATE MATERIALIZED VIEW rollup_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id, metric, time_bucket(INTERVAL '1 hour', ts) AS bucket,
       count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
       last(value, ts) AS last, max(ts) AS last_ts
  FROM readings
 GROUP BY device_id, metric, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA
"""
_CAGG_DAILY = """
CREATE MATERIALIZED VIEW rollup_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id, metric, time_bucket(INTERVAL '1 day', ts, {tz}) AS bucket,
       count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
       last(value, ts) AS last, max(ts) AS last_ts
  FROM readings
 GROUP BY device_id, metric, time_bucket(INTERVAL '1 day', ts, {tz})
WITH NO DATA
"""
# The refresh window starts inside raw retention (core.storage.ROLLUP_REFRESH_MARGIN):
# refreshing a bucket whose raw chunks were dropped would empty it.
_CAGG_POLICIES = """
SELECT add_continuous_aggregate_policy('rollup_hourly',
    start_offset => %(refresh_start)s::interval, end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('rollup_daily',
    start_offset => %(refresh_start)s::interval, end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '1 hour', if_not_exists => true);
SELECT add_retention_policy('rollup_hourly', drop_after => %(hourly)s::interval,
                            if_not_exists => true);
SELECT add_retention_policy('rollup_daily', drop_after => %(daily)s::interval,
                            if_not_exists => true);
"""

# -- the contract both paths share -------------------------------------------------------------

_VIEWS_TIMESCALEDB = """
CREATE VIEW readings_1h AS
SELECT device_id, metric, bucket, count, sum, sum / count AS avg, min, max, last, last_ts
  FROM rollup_hourly;
CREATE VIEW readings_1d AS
SELECT device_id, metric, (bucket AT TIME ZONE {tz})::date AS day, {tz}::text AS time_zone,
       bucket, count, sum, sum / count AS avg, min, max, last, last_ts
  FROM rollup_daily;
"""
# Plain PostgreSQL: materialised hours below the watermark, raw rows above it
# (what TimescaleDB calls real-time aggregation), so nothing is ever missing.
_VIEWS_POSTGRESQL = """
CREATE VIEW readings_1h AS
SELECT device_id, metric, bucket, count, sum, sum / count AS avg, min, max, last, last_ts
  FROM rollup_hourly
 WHERE bucket < (SELECT rollup_watermark FROM storage_config)
UNION ALL
SELECT device_id, metric, date_trunc('hour', ts, 'UTC'), count(*), sum(value), avg(value),
       min(value), max(value), (array_agg(value ORDER BY ts DESC))[1], max(ts)
  FROM readings
 WHERE ts >= (SELECT rollup_watermark FROM storage_config)
 GROUP BY 1, 2, 3;
CREATE VIEW readings_1d AS
SELECT device_id, metric, day, time_zone, bucket, sum(count)::bigint AS count,
       sum(sum) AS sum, sum(sum) / sum(count) AS avg, min(min) AS min, max(max) AS max,
       (array_agg(last ORDER BY last_ts DESC))[1] AS last, max(last_ts) AS last_ts
  FROM (SELECT device_id, metric, day, time_zone, bucket, count, sum, min, max, last, last_ts
          FROM rollup_daily
        UNION ALL
        SELECT r.device_id, r.metric, (r.ts AT TIME ZONE c.time_zone)::date, c.time_zone,
               date_trunc('day', r.ts, c.time_zone), count(*), sum(r.value), min(r.value),
               max(r.value), (array_agg(r.value ORDER BY r.ts DESC))[1], max(r.ts)
          FROM readings AS r
          JOIN devices AS d ON d.id = r.device_id
          JOIN communities AS c ON c.id = d.community_id
         WHERE r.ts >= (SELECT rollup_watermark FROM storage_config)
         GROUP BY 1, 2, 3, 4, 5) AS parts
 GROUP BY device_id, metric, day, time_zone, bucket;
"""


def timescaledb_available(conn: Conn) -> bool:
    """TimescaleDB can be used here: installed, or available and preloaded; and not
    limited to its Apache-licensed part, which has no compression and no
    continuous aggregates (``timescaledb.license = 'apache'``)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb'),"
        " EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries') ~ 'timescaledb',"
        " current_setting('timescaledb.license', true)"
    ).fetchone()
    assert row is not None
    installed, available, preloaded = (bool(v) for v in row[:3])
    if available and not preloaded and not installed:
        _LOG.warning(
            "TimescaleDB is available but not in shared_preload_libraries: using plain PostgreSQL"
        )
    usable = installed or (available and preloaded)
    if usable and row[3] == "apache":
        _LOG.warning(
            "TimescaleDB runs with timescaledb.license = 'apache' (no compression, no"
            " continuous aggregates): using plain PostgreSQL"
        )
        return False
    return usable


def detect_path(conn: Conn) -> StoragePath:
    forced_row = conn.execute("SELECT current_setting(%s, true)", (FORCE_SETTING,)).fetchone()
    forced = (forced_row[0] if forced_row else None) or ""
    if forced:
        try:
            path = StoragePath(forced)
        except ValueError:
            raise ConfigurationError(
                f"{FORCE_SETTING} = {forced!r}: use 'postgresql' or 'timescaledb'"
            ) from None
        if path is StoragePath.TIMESCALEDB and not timescaledb_available(conn):
            raise ConfigurationError(
                f"{FORCE_SETTING} asks for TimescaleDB but the server cannot load it"
                " (or only its Apache-licensed part, without compression and continuous"
                " aggregates)"
            )
        return path
    return StoragePath.TIMESCALEDB if timescaledb_available(conn) else StoragePath.POSTGRESQL


def read_config(conn: Conn) -> StorageConfig:
    row = conn.execute(_CONFIG).fetchone()
    if row is None:
        raise ConfigurationError("storage_config is empty: run `smartcommunity db upgrade`")
    path, chunk, compress, raw, hourly, daily, ahead, tz = row
    return StorageConfig(
        path=StoragePath(path),
        chunk_interval=chunk,
        compress_after=compress,
        raw_retention=raw,
        hourly_retention=hourly,
        daily_retention=daily,
        partitions_ahead=int(ahead),
        daily_time_zone=str(tz),
    )


def install(conn: Conn) -> None:
    """Build the path-specific storage; runs inside migration 0002's transaction."""
    path = detect_path(conn)
    conn.execute("UPDATE storage_config SET path = %s", (path.value,))
    config = read_config(conn)
    if path is StoragePath.TIMESCALEDB:
        _install_timescaledb(conn, config)
    else:
        _install_postgresql(conn, config)
    _LOG.info("storage path: %s", path.value)


def _install_postgresql(conn: Conn, config: StorageConfig) -> None:
    conn.execute(_PLAIN_TABLES.encode())
    now = datetime.now(UTC)
    for table in PARTITIONED_TABLES:
        script = sql.SQL(_PLAIN_CARRY_OVER).format(
            old=sql.Identifier(f"{table}_v1"), new=sql.Identifier(table)
        )
        _run(
            conn,
            script.as_string(conn),
            {
                "table": table,
                "cutoff": now - config.raw_retention,
                "today": now.date(),
                "ahead": config.partitions_ahead,
            },
        )
    _create_views(conn, daily_time_zone=None)
    # Every hour with rows is dirty; refresh_rollups (after_upgrade) computes them.
    conn.execute(
        "INSERT INTO rollup_dirty (hour)"
        " SELECT DISTINCT date_trunc('hour', ts, 'UTC') FROM readings"
    )
    conn.execute("UPDATE storage_config SET rollup_backfill_pending = true")


def _install_timescaledb(conn: Conn, config: StorageConfig) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    _run(conn, _TIMESCALE_TABLES, _durations(config))
    tz = sql.Literal(config.daily_time_zone)
    conn.execute(sql.SQL(_CAGG_HOURLY))
    conn.execute(sql.SQL(_CAGG_DAILY).format(tz=tz))
    _run(conn, _CAGG_POLICIES, _durations(config))
    _create_views(conn, daily_time_zone=config.daily_time_zone)
    has_rows = conn.execute("SELECT EXISTS (SELECT FROM readings)").fetchone()
    if has_rows and has_rows[0]:
        conn.execute("UPDATE storage_config SET rollup_backfill_pending = true")


def _run(conn: Conn, script: str, params: dict[str, Any]) -> None:
    """Run a script of statements with parameters, one statement at a time: the
    extended protocol that binds parameters takes a single statement."""
    for statement in script.split(";\n"):
        if statement.strip() and not _only_comments(statement):
            conn.execute(statement.encode(), params)


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())


def _durations(config: StorageConfig) -> dict[str, timedelta]:
    return {
        "chunk": config.chunk_interval,
        "compress": config.compress_after,
        "raw": config.raw_retention,
        "hourly": config.hourly_retention,
        "daily": config.daily_retention,
        "refresh_start": config.rollup_refresh_start,
    }


def _create_views(conn: Conn, *, daily_time_zone: str | None) -> None:
    if daily_time_zone is None:
        conn.execute(_VIEWS_POSTGRESQL.encode())
    else:
        tz = sql.Literal(daily_time_zone)
        conn.execute(sql.SQL(_VIEWS_TIMESCALEDB).format(tz=tz))


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
                _run(conn, _REFRESH_HOURLY, params)
                done += len(hours)
            else:
                conn.execute(
                    "UPDATE storage_config SET rollup_watermark = %s WHERE rollup_watermark < %s",
                    (upto, upto),
                )
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


def after_upgrade(conn: Conn) -> None:
    """Work that cannot run in a migration's transaction; ``conn`` is in autocommit.

    Fill the rollups from rows carried over: continuous aggregates on
    TimescaleDB, the rollup tables on plain PostgreSQL.
    """
    exists = conn.execute("SELECT to_regclass('storage_config') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return
    row = conn.execute("SELECT rollup_backfill_pending, path FROM storage_config").fetchone()
    if row is None or not row[0]:
        return
    if row[1] == StoragePath.POSTGRESQL.value:
        refresh_rollups(conn)
        conn.execute("UPDATE storage_config SET rollup_backfill_pending = false")
        return
    for view in ("rollup_hourly", "rollup_daily"):
        refresh = "CALL refresh_continuous_aggregate({}, NULL, now() - INTERVAL '1 hour')"
        conn.execute(sql.SQL(refresh).format(sql.Literal(view)))
    conn.execute("UPDATE storage_config SET rollup_backfill_pending = false")
    _LOG.info("continuous aggregates filled from existing readings")


def record_maintenance(conn: Conn, at: datetime, report: dict[str, Any]) -> None:
    """Note the plain path's maintenance pass (``ingest.maintenance``) and its report."""
    conn.execute(
        "UPDATE storage_config SET last_maintenance_at = %s, last_maintenance = %s",
        (at, Jsonb(report)),
    )


def set_retention(conn: Conn, config: StorageConfig) -> None:
    """Store ``config``'s retention and compression horizon and, on TimescaleDB, move
    the policies to it; one transaction."""
    with conn.transaction():
        conn.execute(
            "UPDATE storage_config SET raw_retention = %s, hourly_retention = %s,"
            " daily_retention = %s, compress_after = %s, changed_at = now()",
            (
                config.raw_retention,
                config.hourly_retention,
                config.daily_retention,
                config.compress_after,
            ),
        )
        if config.path is StoragePath.TIMESCALEDB:
            _move_policies(conn, config)


def _move_policies(conn: Conn, config: StorageConfig) -> None:
    """Move the TimescaleDB policies to ``config``."""
    for table, keep in (
        ("readings", config.raw_retention),
        ("device_events", config.raw_retention),
        ("rollup_hourly", config.hourly_retention),
        ("rollup_daily", config.daily_retention),
    ):
        conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (table,))
        conn.execute("SELECT add_retention_policy(%s, drop_after => %s)", (table, keep))
    for table in ("readings", "device_events"):
        conn.execute("SELECT remove_compression_policy(%s, if_exists => true)", (table,))
        conn.execute(
            "SELECT add_compression_policy(%s, compress_after => %s)",
            (table, config.compress_after),
        )
    # The refresh window must stay inside raw retention: move it with it.
    for view, every in (("rollup_hourly", "30 minutes"), ("rollup_daily", "1 hour")):
        conn.execute("SELECT remove_continuous_aggregate_policy(%s, if_exists => true)", (view,))
        conn.execute(
            "SELECT add_continuous_aggregate_policy(%s, start_offset => %s,"
            " end_offset => INTERVAL '1 hour', schedule_interval => %s::interval)",
            (view, config.rollup_refresh_start, every),
        )
