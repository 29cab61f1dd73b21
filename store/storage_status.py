"""What ``smartcommunity db status`` and ``db retention`` read of the storage: sizes,
day partitions or chunks, compression, the TimescaleDB policies' jobs, the plain
path's rollup watermark and last maintenance pass, and what a retention would drop.
(``store.layout`` builds the storage; ``store.storage_config`` writes ``storage_config``.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg import sql

from core.storage import StoragePath
from store.rows import Conn

__all__ = [
    "ChunkCounts",
    "PartitionSpan",
    "PolicyJob",
    "RollupState",
    "chunk_counts",
    "chunks_older_than",
    "compression_bytes",
    "default_partition_rows",
    "partition_span",
    "partitions_before",
    "policy_jobs",
    "rollup_state",
    "table_sizes",
    "timescaledb_version",
]


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
_ROLLUP_STATE = (
    "SELECT rollup_watermark, (SELECT count(DISTINCT hour) FROM rollup_dirty),"
    " last_maintenance_at, last_maintenance FROM storage_config"
)
_PARTITIONS_BEFORE = (
    "SELECT count(*) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = %s::regclass AND c.relname ~ '_p[0-9]{8}$'"
    " AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= %s"
)
_CHUNKS_OLDER = "SELECT count(*) FROM show_chunks(%s::regclass, older_than => %s::interval)"


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """The day partitions of a table: how many, the first and the last by name."""

    count: int
    first: str | None
    last: str | None


@dataclass(frozen=True, slots=True)
class ChunkCounts:
    count: int
    compressed: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True)
class RollupState:
    """The plain path's rollups and maintenance, from ``storage_config``."""

    watermark: datetime
    dirty_hours: int
    last_maintenance_at: datetime | None
    last_maintenance: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PolicyJob:
    proc: str
    table: str
    every: timedelta
    settings: dict[str, Any] | None
    last_at: datetime | None
    status: str | None
    runs: int | None
    failures: int | None
    next_at: datetime | None
    error: str | None


def timescaledb_version(conn: Conn) -> str | None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return row[0] if row else None


def table_sizes(conn: Conn, path: StoragePath, tables: Sequence[str]) -> list[tuple[str, str]]:
    """(table, its size in words) in the order given: with indexes and partitions,
    or on TimescaleDB with chunks and compressed chunks."""
    query = _SIZES if path is StoragePath.POSTGRESQL else _SIZES_TIMESCALE
    return [(name, size) for name, size in conn.execute(query, (list(tables),))]


def partition_span(conn: Conn, table: str) -> PartitionSpan:
    return PartitionSpan(*(conn.execute(_PARTITIONS, (table,)).fetchone() or (0, None, None)))


def default_partition_rows(conn: Conn, table: str) -> int:
    """Rows waiting in ``table``'s DEFAULT partition (plain path)."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{table}_default"))
    ).fetchone()
    return row[0] if row else 0


def rollup_state(conn: Conn) -> RollupState:
    row = conn.execute(_ROLLUP_STATE).fetchone()
    assert row is not None
    return RollupState(*row)


def chunk_counts(conn: Conn, table: str) -> ChunkCounts:
    return ChunkCounts(*(conn.execute(_CHUNKS, (table,)).fetchone() or (0, 0, None, None)))


def compression_bytes(conn: Conn, table: str) -> tuple[Decimal | None, Decimal | None]:
    """(bytes before, bytes after) compression of ``table``'s compressed chunks."""
    return conn.execute(_RATIO, (table,)).fetchone() or (None, None)


def policy_jobs(conn: Conn, tables: Sequence[str]) -> list[PolicyJob]:
    """The platform's TimescaleDB policies on ``tables``, with their last run."""
    return [PolicyJob(*row) for row in conn.execute(_JOBS, (list(tables),))]


def partitions_before(conn: Conn, table: str, cutoff: date) -> int:
    """Day partitions of ``table`` that end on or before ``cutoff``."""
    row = conn.execute(_PARTITIONS_BEFORE, (table, cutoff)).fetchone()
    return row[0] if row else 0


def chunks_older_than(conn: Conn, table: str, age: timedelta) -> int:
    row = conn.execute(_CHUNKS_OLDER, (table, age)).fetchone()
    return row[0] if row else 0
