"""``smartcommunity db status`` and ``smartcommunity db retention``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from core.errors import ConfigurationError
from core.storage import StorageConfig, StoragePath, retention_cutoff_day
from ingest.maintenance import maintain
from smartcommunity.cli_support import settings as cli_settings
from smartcommunity.commands import SubParsers
from store import schema
from store.layout import read_config

__all__ = ["register", "retention_changes", "status_lines"]

Conn = psycopg.Connection[Any]

_SIZES = (
    "SELECT name, pg_size_pretty(coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint)"
    " FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, n)"
    " LEFT JOIN pg_class AS c ON c.oid = to_regclass(t.name)"
    "   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(t.name))"
    " GROUP BY name, n ORDER BY n"
)
# TimescaleDB: a compressed chunk's rows live in an internal table that is no
# child of the hypertable, and a continuous aggregate's rows in its
# materialisation hypertable: hypertable_size() counts both.
_SIZES_TIMESCALE = (
    "SELECT name, pg_size_pretty(coalesce("
    "   (SELECT hypertable_size(format('%%I.%%I', h.hypertable_schema, h.hypertable_name))"
    "      FROM timescaledb_information.hypertables AS h"
    "     WHERE h.hypertable_name = t.name AND h.hypertable_schema = current_schema()),"
    "   (SELECT hypertable_size(format('%%I.%%I', a.materialization_hypertable_schema,"
    "                                  a.materialization_hypertable_name))"
    "      FROM timescaledb_information.continuous_aggregates AS a"
    "     WHERE a.view_name = t.name AND a.view_schema = current_schema()),"
    "   pg_total_relation_size(to_regclass(t.name)), 0))"
    " FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, n) ORDER BY n"
)
_PARTITIONS = (
    "SELECT count(*), min(c.relname), max(c.relname) FROM pg_inherits AS i"
    " JOIN pg_class AS c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = %s::regclass AND c.relname ~ '_p[0-9]{8}$'"
)
_CHUNKS = (
    "SELECT count(*), count(*) FILTER (WHERE is_compressed), min(range_start), max(range_end)"
    " FROM timescaledb_information.chunks WHERE hypertable_name = %s"
)
_RATIO = (
    "SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes)"
    " FROM hypertable_compression_stats(%s)"
)
_JOBS = (
    "SELECT j.proc_name, j.hypertable_name, j.schedule_interval, j.config,"
    " s.last_run_started_at, s.last_run_status, s.total_runs, s.total_failures,"
    " s.next_start, e.err_message"
    " FROM timescaledb_information.jobs AS j"
    " LEFT JOIN timescaledb_information.job_stats AS s USING (job_id)"
    " LEFT JOIN LATERAL (SELECT err_message FROM timescaledb_information.job_errors AS e"
    "                     WHERE e.job_id = j.job_id ORDER BY e.start_time DESC LIMIT 1) AS e"
    "   ON s.last_run_status = 'Failed'"
    # The platform's policies only: TimescaleDB has jobs of its own (telemetry, job
    # history retention) that belong to no hypertable.
    " WHERE j.proc_name LIKE 'policy_%%' AND j.hypertable_name = ANY(%s)"
    " ORDER BY j.hypertable_name, j.proc_name"
)
_POLICY_TABLES = ["readings", "device_events", "rollup_hourly", "rollup_daily"]


def _url() -> str:
    url = cli_settings().database_url
    if url is None:
        raise ConfigurationError("SC_DATABASE_URL is not set")
    schema.upgrade(url)
    return url


def _days(value: timedelta) -> str:
    return f"{value.days} days" if value.seconds == 0 else str(value)


def _interval(value: timedelta) -> str:
    """``12 hours``, ``1 day``, ``1 day 6 hours``: what a person reads in a policy."""
    units = [
        (value.days, "day"),
        (value.seconds // 3600, "hour"),
        (value.seconds // 60 % 60, "minute"),
        (value.seconds % 60, "second"),
    ]
    parts = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in units if n]
    return " ".join(parts) or "0 seconds"


def _when(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if value else "never"


def status_lines(conn: Conn) -> list[str]:
    """What ``db status`` prints: path, sizes, partitions or chunks, compression, policies."""
    config = read_config(conn)
    lines = [f"storage path: {config.path.value}"]
    if config.path is StoragePath.TIMESCALEDB:
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        lines.append(f"timescaledb: {version[0] if version else '?'}")
    lines.append(f"retention: {_summary(config)}")
    tables = ["readings", "device_events", "rollup_hourly", "rollup_daily", "latest"]
    if config.path is StoragePath.POSTGRESQL:
        lines.append("sizes (with indexes and partitions):")
        sizes = conn.execute(_SIZES, (tables,))
    else:
        lines.append("sizes (with indexes, chunks and compressed chunks):")
        sizes = conn.execute(_SIZES_TIMESCALE, (tables,))
    for name, size in sizes:
        lines.append(f"  {name:<15} {size}")
    if config.path is StoragePath.POSTGRESQL:
        lines += _plain_status(conn, config)
    else:
        lines += _timescale_status(conn, config)
    return lines


def _plain_status(conn: Conn, config: StorageConfig) -> list[str]:
    lines = ["partitions (UTC days):"]
    for table in ("readings", "device_events"):
        count, first, last = conn.execute(_PARTITIONS, (table,)).fetchone() or (0, None, None)
        default = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{table}_default"))
        ).fetchone()
        lines.append(
            f"  {table:<15} {count} partitions, {first} .. {last};"
            f" {default[0] if default else 0} rows waiting in {table}_default"
        )
    lines.append("compression: none on plain PostgreSQL (TimescaleDB path only)")
    row = conn.execute(
        "SELECT rollup_watermark, (SELECT count(DISTINCT hour) FROM rollup_dirty),"
        " last_maintenance_at, last_maintenance FROM storage_config"
    ).fetchone()
    assert row is not None
    watermark, dirty, last_at, last = row
    lines.append(f"rollups: materialised up to {watermark}; {dirty} hours waiting for refresh")
    lines.append(
        f"maintenance (partitions {config.partitions_ahead} days ahead, retention):"
        f" last run {last_at or 'never'}"
    )
    if last:
        lines.append(
            f"  created {len(last.get('created', []))}, dropped {len(last.get('dropped', []))},"
            f" rollup rows deleted {last.get('rollup_rows_deleted', 0)},"
            f" errors {last.get('errors', [])}"
        )
    return lines


def _timescale_status(conn: Conn, config: StorageConfig) -> list[str]:
    lines = [f"chunks (interval {_interval(config.chunk_interval)}):"]
    for table in ("readings", "device_events"):
        count, compressed, first, last = conn.execute(_CHUNKS, (table,)).fetchone() or (
            0, 0, None, None
        )  # fmt: skip
        before, after = conn.execute(_RATIO, (table,)).fetchone() or (None, None)
        span = f"{first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC" if count else "none yet"
        if before and after:
            ratio = (
                f"compression ratio {before / after:.1f}x"
                f" ({_mib(before)} -> {_mib(after)} in the compressed chunks)"
            )
        else:
            ratio = "compression ratio n/a (nothing compressed yet)"
        lines.append(f"  {table:<15} {count} chunks ({compressed} compressed), {span}; {ratio}")
    lines.append("policies (TimescaleDB job scheduler):")
    for row in conn.execute(_JOBS, (_POLICY_TABLES,)):
        proc, table, every, settings, last_at, status, runs, failures, next_at, error = row
        shown = {k: v for k, v in (settings or {}).items() if not k.endswith("hypertable_id")}
        options = ", ".join(f"{k} {v}" for k, v in sorted(shown.items()))
        lines.append(f"  {table:<15} {proc:<36} every {_interval(every)}; {options}")
        last = f"last run {_when(last_at)}"
        if status:
            last += f" {status} (runs {runs or 0}, failed {failures or 0})"
        if error:
            last += f": {error}"
        lines.append(f"  {'':<15} {last}; next {_when(next_at)}")
    return lines


def _mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


def retention_changes(conn: Conn, config: StorageConfig) -> list[str]:
    """What the new raw retention would drop now, as lines; empty when nothing."""
    now = datetime.now(UTC)
    found = []
    if config.path is StoragePath.POSTGRESQL:
        cutoff = retention_cutoff_day(now, config.raw_retention)
        for table in ("readings", "device_events"):
            row = conn.execute(
                "SELECT count(*) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = %s::regclass AND c.relname ~ '_p[0-9]{8}$'"
                " AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= %s",
                (table, cutoff),
            ).fetchone()
            if row and row[0]:
                found.append(f"{table}: {row[0]} day partitions before {cutoff}")
    else:
        for table in ("readings", "device_events"):
            row = conn.execute(
                "SELECT count(*) FROM show_chunks(%s::regclass, older_than => %s::interval)",
                (table, config.raw_retention),
            ).fetchone()
            if row and row[0]:
                found.append(f"{table}: {row[0]} chunks older than {_days(config.raw_retention)}")
    return found


def _apply_timescale(conn: Conn, config: StorageConfig) -> None:
    """Move the TimescaleDB policies to ``config``; one transaction."""
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


def _status(_args: argparse.Namespace) -> int:
    with psycopg.connect(_url(), autocommit=True) as conn:
        print("\n".join(status_lines(conn)))
    return 0


def _retention(args: argparse.Namespace) -> int:
    with psycopg.connect(_url(), autocommit=True) as conn:
        current = read_config(conn)
        wanted = dataclasses.replace(
            current,
            raw_retention=_given(args.raw, current.raw_retention),
            hourly_retention=_given(args.hourly, current.hourly_retention),
            daily_retention=_given(args.daily, current.daily_retention),
            compress_after=_given(args.compress_after, current.compress_after),
        )
        problems = wanted.problems()
        if problems:
            print("refused: " + "; ".join(problems), file=sys.stderr)
            return 2
        if wanted == current:
            print(f"retention unchanged: {_summary(current)}")
            return 0
        drops = retention_changes(conn, wanted)
        if drops and not args.yes:
            print("this would drop stored data now:", file=sys.stderr)
            for line in drops:
                print(f"  {line}", file=sys.stderr)
            print("rerun with --yes to apply", file=sys.stderr)
            return 1
        with conn.transaction():
            conn.execute(
                "UPDATE storage_config SET raw_retention = %s, hourly_retention = %s,"
                " daily_retention = %s, compress_after = %s, changed_at = now()",
                (
                    wanted.raw_retention,
                    wanted.hourly_retention,
                    wanted.daily_retention,
                    wanted.compress_after,
                ),
            )
            if wanted.path is StoragePath.TIMESCALEDB:
                _apply_timescale(conn, wanted)
        if wanted.path is StoragePath.POSTGRESQL:
            report = maintain(conn)
            print(f"maintenance: dropped {len(report.dropped)} partitions")
        print(f"retention: {_summary(wanted)}")
    return 0


def _summary(config: StorageConfig) -> str:
    return (
        f"raw {_days(config.raw_retention)}, hourly rollups {_days(config.hourly_retention)},"
        f" daily rollups {_days(config.daily_retention)},"
        f" compress after {_days(config.compress_after)}"
    )


def _given(days: int | None, current: timedelta) -> timedelta:
    return current if days is None else timedelta(days=days)


def register(_commands: SubParsers, db: SubParsers) -> None:
    db.add_parser(
        "status", help="storage path, sizes, partitions or chunks, compression, policies"
    ).set_defaults(func=_status)
    retention = db.add_parser(
        "retention",
        help="change how long raw readings and rollups are kept",
        description="Checks the new values (rollups outlive raw data; compression starts"
        " before retention), shows what would be dropped now and asks for --yes before"
        " dropping anything. On TimescaleDB it moves the policies, including the rollup"
        " refresh window, which must stay inside the raw retention.",
    )
    retention.add_argument("--raw", type=int, metavar="DAYS", help="raw readings and events")
    retention.add_argument("--hourly", type=int, metavar="DAYS", help="hourly rollups")
    retention.add_argument("--daily", type=int, metavar="DAYS", help="daily rollups")
    retention.add_argument(
        "--compress-after", type=int, metavar="DAYS", help="TimescaleDB compression horizon"
    )
    retention.add_argument("--yes", action="store_true", help="drop what falls out now")
    retention.set_defaults(func=_retention)
