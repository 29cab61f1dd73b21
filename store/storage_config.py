"""The storage settings row (``storage_config``): what ``read_config`` returns, and its
one writer: the path chosen at install (``store.layout``), the rollup watermark and
the pending backfill (``store.rollups``), the retention (``store.layout.set_retention``,
for ``db retention``) and the plain path's last maintenance pass (``record_maintenance``,
for ``ingest.maintenance``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from core.errors import ConfigurationError
from core.storage import StorageConfig, StoragePath
from store.rows import Conn

__all__ = [
    "advance_watermark",
    "backfill_pending",
    "read_config",
    "record_maintenance",
    "set_backfill_pending",
    "set_path",
    "store_retention",
]


_CONFIG = (
    "SELECT path, chunk_interval, compress_after, raw_retention, hourly_retention,"
    " daily_retention, partitions_ahead, daily_time_zone FROM storage_config"
)


def read_config(conn: Conn) -> StorageConfig:
    row = conn.execute(_CONFIG).fetchone()
    if row is None:
        raise ConfigurationError("storage_config is empty: run `smartcommunity db upgrade`")
    path, *rest = row  # the columns in StorageConfig's order
    return StorageConfig(StoragePath(path), *rest)


def set_path(conn: Conn, path: StoragePath) -> None:
    conn.execute("UPDATE storage_config SET path = %s", (path.value,))


def backfill_pending(conn: Conn) -> tuple[bool, str] | None:
    """Whether rows carried over by an upgrade still wait for their rollups, and the
    path; None before migration 0002 (no ``storage_config`` yet) or with no row."""
    exists = conn.execute("SELECT to_regclass('storage_config') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return None
    row = conn.execute("SELECT rollup_backfill_pending, path FROM storage_config").fetchone()
    return None if row is None else (bool(row[0]), str(row[1]))


def set_backfill_pending(conn: Conn, pending: bool) -> None:
    conn.execute("UPDATE storage_config SET rollup_backfill_pending = %s", (pending,))


def advance_watermark(conn: Conn, upto: datetime) -> None:
    """The plain path's rollups are complete up to ``upto`` (never moves back)."""
    conn.execute(
        "UPDATE storage_config SET rollup_watermark = %s WHERE rollup_watermark < %s",
        (upto, upto),
    )


def record_maintenance(conn: Conn, at: datetime, report: dict[str, Any]) -> None:
    """Note the plain path's maintenance pass (``ingest.maintenance``) and its report."""
    conn.execute(
        "UPDATE storage_config SET last_maintenance_at = %s, last_maintenance = %s",
        (at, Jsonb(report)),
    )


def store_retention(conn: Conn, config: StorageConfig) -> None:
    """Store ``config``'s retention and compression horizon (in the caller's transaction)."""
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
