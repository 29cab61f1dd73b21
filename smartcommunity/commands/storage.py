"""``smartcommunity db status`` and ``smartcommunity db retention``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from core.storage import StorageConfig, StoragePath, retention_cutoff_day
from ingest.maintenance import maintain
from smartcommunity.cli_support import database_url
from smartcommunity.commands import SubParsers, subcommand
from store.layout import set_retention
from store.storage_config import read_config
from store.storage_status import (
    chunk_counts,
    chunks_older_than,
    compression_bytes,
    default_partition_rows,
    partition_span,
    partitions_before,
    policy_jobs,
    rollup_state,
    table_sizes,
    timescaledb_version,
)

__all__ = ["register", "retention_changes", "status_lines"]

Conn = psycopg.Connection[Any]

_POLICY_TABLES = ["readings", "device_events", "rollup_hourly", "rollup_daily"]


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
        lines.append(f"timescaledb: {timescaledb_version(conn) or '?'}")
    lines.append(f"retention: {_summary(config)}")
    tables = ["readings", "device_events", "rollup_hourly", "rollup_daily", "latest"]
    if config.path is StoragePath.POSTGRESQL:
        lines.append("sizes (with indexes and partitions):")
    else:
        lines.append("sizes (with indexes, chunks and compressed chunks):")
    for name, size in table_sizes(conn, config.path, tables):
        lines.append(f"  {name:<15} {size}")
    if config.path is StoragePath.POSTGRESQL:
        lines += _plain_status(conn, config)
    else:
        lines += _timescale_status(conn, config)
    return lines


def _plain_status(conn: Conn, config: StorageConfig) -> list[str]:
    lines = ["partitions (UTC days):"]
    for table in ("readings", "device_events"):
        span = partition_span(conn, table)
        waiting = default_partition_rows(conn, table)
        lines.append(
            f"  {table:<15} {span.count} partitions, {span.first} .. {span.last};"
            f" {waiting} rows waiting in {table}_default"
        )
    lines.append("compression: none on plain PostgreSQL (TimescaleDB path only)")
    state = rollup_state(conn)
    watermark, dirty = state.watermark, state.dirty_hours
    last_at, last = state.last_maintenance_at, state.last_maintenance
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
        chunks = chunk_counts(conn, table)
        before, after = compression_bytes(conn, table)
        span = (
            f"{chunks.first:%Y-%m-%d %H:%M} .. {chunks.last:%Y-%m-%d %H:%M} UTC"
            if chunks.count
            else "none yet"
        )
        if before and after:
            ratio = (
                f"compression ratio {before / after:.1f}x"
                f" ({_mib(before)} -> {_mib(after)} in the compressed chunks)"
            )
        else:
            ratio = "compression ratio n/a (nothing compressed yet)"
        lines.append(
            f"  {table:<15} {chunks.count} chunks ({chunks.compressed} compressed), {span}; {ratio}"
        )
    lines.append("policies (TimescaleDB job scheduler):")
    for job in policy_jobs(conn, _POLICY_TABLES):
        settings = job.settings or {}
        shown = {k: v for k, v in settings.items() if not k.endswith("hypertable_id")}
        options = ", ".join(f"{k} {v}" for k, v in sorted(shown.items()))
        lines.append(f"  {job.table:<15} {job.proc:<36} every {_interval(job.every)}; {options}")
        last = f"last run {_when(job.last_at)}"
        if job.status:
            last += f" {job.status} (runs {job.runs or 0}, failed {job.failures or 0})"
        if job.error:
            last += f": {job.error}"
        lines.append(f"  {'':<15} {last}; next {_when(job.next_at)}")
    return lines


def _mib(size: Decimal) -> str:
    return f"{size / 2**20:,.1f} MiB"


def retention_changes(conn: Conn, config: StorageConfig) -> list[str]:
    """What the new raw retention would drop now, as lines; empty when nothing."""
    now = datetime.now(UTC)
    found = []
    if config.path is StoragePath.POSTGRESQL:
        cutoff = retention_cutoff_day(now, config.raw_retention)
        for table in ("readings", "device_events"):
            count = partitions_before(conn, table, cutoff)
            if count:
                found.append(f"{table}: {count} day partitions before {cutoff}")
    else:
        for table in ("readings", "device_events"):
            count = chunks_older_than(conn, table, config.raw_retention)
            if count:
                found.append(f"{table}: {count} chunks older than {_days(config.raw_retention)}")
    return found


def _status(_args: argparse.Namespace) -> int:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        print("\n".join(status_lines(conn)))
    return 0


def _retention(args: argparse.Namespace) -> int:
    with psycopg.connect(database_url(), autocommit=True) as conn:
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
        set_retention(conn, wanted)
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
    subcommand(
        db,
        "status",
        _status,
        help="storage path, sizes, partitions or chunks, compression, policies",
    )
    retention = subcommand(
        db,
        "retention",
        _retention,
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
