"""``pipeline_metrics``: each worker's counters and heartbeat (written by the worker,
``gateway/process.py``), and the figures ``/health`` and ``/metrics`` read back
from it, the registry and the dead letters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from store.rows import Conn

__all__ = [
    "WorkerHealth",
    "clustered_workers",
    "dead_letter_counts",
    "device_counts",
    "report_state",
    "save_counters",
    "worker_counters",
    "worker_health",
]


def save_counters(conn: Conn, worker: str, at: datetime, counters: Mapping[str, Any]) -> None:
    """The worker's counters as of ``at`` (the API renders them for every worker), in
    the caller's transaction."""
    # Saved on the commit thread between batches: counters a crash may lose (the next
    # save brings them) need no flush to disk, and the batch behind need not wait for one.
    conn.execute("SET LOCAL synchronous_commit = off")
    conn.execute(
        "INSERT INTO pipeline_metrics (worker, updated_at, counters) VALUES (%s, %s, %s)"
        " ON CONFLICT (worker) DO UPDATE"
        " SET updated_at = excluded.updated_at, counters = excluded.counters",
        (worker, at, Jsonb(dict(counters))),
    )


def report_state(conn: Conn, worker: str, heartbeat_s: float, state: str, failure: str) -> None:
    """A heartbeat: the worker is ``state`` now and beats every ``heartbeat_s``."""
    conn.execute(
        "INSERT INTO pipeline_metrics AS m"
        " (worker, updated_at, counters, heartbeat_at, heartbeat_s, state, failure)"
        " VALUES (%s, now(), '{}', now(), %s, %s, %s)"
        " ON CONFLICT (worker) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
        " heartbeat_s = excluded.heartbeat_s, state = excluded.state,"
        " failure = excluded.failure",
        (worker, heartbeat_s, state, failure),
    )


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    worker: str
    state: str
    failure: str | None
    late: bool  # its heartbeat is overdue


def worker_health(conn: Conn, missed_beats: int) -> list[WorkerHealth]:
    """Running or failed workers, and whether each one missed ``missed_beats`` beats."""
    rows = conn.execute(
        "SELECT worker, state, failure,"
        " heartbeat_at < now() - make_interval(secs => heartbeat_s * %s)"
        " FROM pipeline_metrics WHERE state IN ('running', 'failed') ORDER BY worker",
        (missed_beats,),
    ).fetchall()
    return [WorkerHealth(str(w), str(s), f, bool(late)) for w, s, f, late in rows]


def worker_counters(conn: Conn) -> list[tuple[str, datetime, dict[str, Any]]]:
    """(worker, saved at, counters) of every worker that saved any."""
    rows = conn.execute("SELECT worker, updated_at, counters FROM pipeline_metrics").fetchall()
    return [(str(w), at, dict(c)) for w, at, c in rows]


def dead_letter_counts(conn: Conn) -> list[tuple[str, int]]:
    """Dead letters by reason (as row-level security lets the caller see them)."""
    rows = conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall()
    return [(str(r), int(n)) for r, n in rows]


def device_counts(conn: Conn) -> list[tuple[str, str, int, int]]:
    """(class, state, devices, of which reported within twice their interval)."""
    rows = conn.execute(
        "SELECT device_class, state, count(*),"
        " count(*) FILTER (WHERE last_received_at > now() - make_interval("
        "secs => 2 * expected_interval_s))"
        " FROM devices GROUP BY device_class, state"
    ).fetchall()
    return [(str(c), str(s), int(n), int(f)) for c, s, n, f in rows]


def clustered_workers(conn: Conn) -> int:
    """Clustered workers alive: a recent heartbeat and shard figures in their counters."""
    row = conn.execute(
        "SELECT count(*) FROM pipeline_metrics WHERE state = 'running'"
        " AND heartbeat_at > now() - 3 * heartbeat_s * interval '1 second'"
        " AND counters ? 'shard_active'"
    ).fetchone()
    return int(row[0]) if row is not None else 0
