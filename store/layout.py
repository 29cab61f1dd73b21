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
``WITH NO DATA`` (a refresh cannot run inside a transaction);
``store.rollups.after_upgrade`` fills them from existing rows once the migration has
committed.

On the plain path it also holds the statements of the maintenance pass that
``ingest.maintenance`` schedules: the day partitions of ``readings`` and
``device_events`` made ahead, late rows moved out of their DEFAULT partitions,
expired partitions dropped. On TimescaleDB it moves the policies with the retention
(``set_retention``, for ``db retention``). The settings row itself is
``store.storage_config``'s; the rollups are ``store.rollups``'.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import sql

from core.errors import ConfigurationError
from core.storage import PARTITIONED_TABLES, StorageConfig, StoragePath
from store.rollups import note_every_hour
from store.rows import Conn
from store.storage_config import read_config, set_backfill_pending, set_path, store_retention

__all__ = [
    "FORCE_SETTING",
    "days_in_default",
    "detect_path",
    "drop_day_partitions",
    "ensure_day_partition",
    "install",
    "lock_maintenance",
    "set_lock_timeout",
    "set_retention",
    "timescaledb_available",
    "unlock_maintenance",
]

_LOG = logging.getLogger(__name__)


FORCE_SETTING = "smartcommunity.storage"

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


def install(conn: Conn) -> None:
    """Build the path-specific storage; runs inside migration 0002's transaction."""
    path = detect_path(conn)
    set_path(conn, path)
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
    note_every_hour(conn)
    set_backfill_pending(conn, True)


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
        set_backfill_pending(conn, True)


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


def set_retention(conn: Conn, config: StorageConfig) -> None:
    """Store ``config``'s retention and compression horizon and, on TimescaleDB, move
    the policies to it; one transaction."""
    with conn.transaction():
        store_retention(conn, config)
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


# -- the plain path's maintenance (scheduled by ingest.maintenance) -------------------------

# Not the migrations' key: maintenance must not wait for (or block) an upgrade.
_MAINTENANCE_LOCK_KEY = 0x5C0_0002


def lock_maintenance(conn: Conn) -> bool:
    """Take the maintenance lock of this session, if no other worker holds it."""
    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (_MAINTENANCE_LOCK_KEY,)).fetchone()
    return bool(locked and locked[0])


def unlock_maintenance(conn: Conn) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (_MAINTENANCE_LOCK_KEY,))


def set_lock_timeout(conn: Conn, timeout: str | None) -> None:
    """How long a statement of this session waits for a lock (None: the default again)."""
    if timeout is None:
        conn.execute("RESET lock_timeout")
    else:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(timeout)))


def days_in_default(conn: Conn, table: str, cutoff: date) -> set[date]:
    """The UTC days, from ``cutoff`` on, of the rows in ``table``'s DEFAULT partition."""
    query = sql.SQL("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM {} WHERE ts >= %s").format(
        sql.Identifier(f"{table}_default")
    )
    start = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    return {row[0] for row in conn.execute(query, (start,))}


def ensure_day_partition(conn: Conn, table: str, day: date) -> bool:
    """Create ``table``'s partition of ``day``, moving its rows out of the DEFAULT
    partition; False when it existed."""
    row = conn.execute("SELECT sc_ensure_day_partition(%s, %s)", (table, day)).fetchone()
    return bool(row and row[0])


def drop_day_partitions(conn: Conn, table: str, cutoff: date) -> list[str]:
    """Drop ``table``'s day partitions that end by ``cutoff`` and delete older rows from
    its DEFAULT partition; the partitions dropped."""
    row = conn.execute("SELECT sc_drop_day_partitions(%s, %s)", (table, cutoff)).fetchone()
    return list(row[0]) if row and row[0] else []
