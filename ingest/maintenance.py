"""Keeps plain-PostgreSQL storage in shape; on TimescaleDB its policies do this.

Each pass, under an advisory lock so that one worker at a time does it:

- creates the UTC-day partitions of ``readings`` and ``device_events`` from
  yesterday to ``partitions_ahead`` days ahead (the gateway accepts device time
  up to 24 h ahead, so a reading never waits for a partition);
- moves late rows that landed in a DEFAULT partition (their day had no
  partition yet) into their day's partition, creating it;
- drops day partitions wholly older than the raw retention, deletes expired
  rows left in the DEFAULT partitions, and deletes rollup rows older than their
  retention.

More often (``ROLLUP_EVERY_S``) it refreshes the rollups of the complete hours
the writer noted dirty (``store.rollups.refresh_rollups``).

Each DDL step is its own short transaction with a lock timeout: a long query
that holds a table makes the step wait for the next pass, never makes writers
queue behind it.

This module decides when and in what order; the statements are ``store.layout``'s
(partitions), ``store.rollups``' (rollups) and ``store.storage_config``'s (the pass's
record).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from core.storage import PARTITIONED_TABLES, StoragePath, partition_day, retention_cutoff_day
from store import layout
from store.rollups import expire_rollups, refresh_rollups
from store.storage_config import read_config, record_maintenance

__all__ = [
    "MAINTENANCE_EVERY_S",
    "ROLLUP_EVERY_S",
    "MaintenanceReport",
    "MaintenanceTask",
    "maintain",
]

_LOG = logging.getLogger(__name__)

# Hourly: partitions exist a week ahead, so even days of missed passes lose
# nothing; late rows wait in the DEFAULT partition at most this long.
MAINTENANCE_EVERY_S = 3600.0
# Late rows reach the rollups of their (already materialised) hour this much
# later; newer hours are read from raw rows by the views, so they never wait.
ROLLUP_EVERY_S = 15.0
# The thread wakes this often: to notice a stop, and to say it is alive.
_TURN_S = 1.0
# How long a DDL step waits for a table lock before giving up until the next pass.
LOCK_TIMEOUT = "5s"

Conn = psycopg.Connection[Any]


@dataclass(slots=True)
class MaintenanceReport:
    path: str
    at: datetime
    ran: bool = True
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rollup_rows_deleted: int = 0
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


def maintain(conn: Conn, now: datetime | None = None) -> MaintenanceReport:
    """One pass; ``conn`` must be in autocommit. ``now`` is for tests of retention."""
    now = now or datetime.now(UTC)
    config = read_config(conn)
    report = MaintenanceReport(path=config.path.value, at=now)
    if config.path is StoragePath.TIMESCALEDB:
        return report  # TimescaleDB's job scheduler runs the policies
    if not layout.lock_maintenance(conn):
        report.ran = False
        return report
    try:
        layout.set_lock_timeout(conn, LOCK_TIMEOUT)
        today = partition_day(now)
        cutoff = retention_cutoff_day(now, config.raw_retention)
        for table in PARTITIONED_TABLES:
            days = {today + timedelta(days=n) for n in range(-1, config.partitions_ahead + 1)}
            days |= layout.days_in_default(conn, table, cutoff)
            for day in sorted(d for d in days if d >= cutoff):
                _step(conn, report, f"create {table} {day}", _ensure, table, day)
            _step(conn, report, f"retention of {table}", _drop, table, cutoff)
        for table, keep in (
            ("rollup_hourly", config.hourly_retention),
            ("rollup_daily", config.daily_retention),
        ):
            _step(conn, report, f"retention of {table}", _expire_rollups, table, now - keep)
        record_maintenance(conn, now, report.as_json())
    finally:
        layout.set_lock_timeout(conn, None)
        layout.unlock_maintenance(conn)
    return report


def _step(conn: Conn, report: MaintenanceReport, what: str, func: Any, *args: Any) -> None:
    """Run one step in its own transaction; a refused step waits for the next pass."""
    try:
        with conn.transaction():
            func(conn, report, *args)
    except psycopg.errors.LockNotAvailable:
        report.errors.append(f"{what}: table busy, retried next pass")
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        report.errors.append(f"{what}: {exc.diag.message_primary or exc}")
        _LOG.warning("storage maintenance: %s failed: %s", what, exc)


def _ensure(conn: Conn, report: MaintenanceReport, table: str, day: date) -> None:
    if layout.ensure_day_partition(conn, table, day):
        report.created.append(f"{table}_p{day:%Y%m%d}")


def _drop(conn: Conn, report: MaintenanceReport, table: str, cutoff: date) -> None:
    report.dropped.extend(layout.drop_day_partitions(conn, table, cutoff))


def _expire_rollups(conn: Conn, report: MaintenanceReport, table: str, before: datetime) -> None:
    report.rollup_rows_deleted += expire_rollups(conn, table, before)


class MaintenanceTask:
    """Refreshes rollups every ``rollup_every_s`` and runs ``maintain`` at start and
    every ``every_s``, until stopped, on its own connection. Plain PostgreSQL only;
    on TimescaleDB it checks the path once and then idles. A database outage is
    logged and retried at the next pass."""

    def __init__(
        self,
        *,
        url: str,
        every_s: float = MAINTENANCE_EVERY_S,
        rollup_every_s: float = ROLLUP_EVERY_S,
    ) -> None:
        self.url = url
        self.every_s = every_s
        self.rollup_every_s = rollup_every_s
        self.last: MaintenanceReport | None = None
        self.timescale = False

    def run(self, stop: threading.Event, beat: Callable[[str], None] | None = None) -> None:
        """Until ``stop``; ``beat`` (the supervisor's) is called every second or so."""
        name = threading.current_thread().name
        next_maintenance = next_rollup = 0.0
        while not stop.is_set():
            if beat is not None:
                beat(name)
            if time.monotonic() >= next_rollup:
                next_rollup = time.monotonic() + self.rollup_every_s
                if self._pass(next_maintenance <= time.monotonic()):
                    next_maintenance = time.monotonic() + self.every_s
                elif self.timescale:
                    # Its job scheduler runs the policies: the thread stays, idle, so
                    # that its end always means a failure.
                    next_rollup = float("inf")
            stop.wait(_TURN_S)

    def _pass(self, maintenance_due: bool) -> bool:
        """One rollup refresh (and maintenance when due); True when maintenance ran."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                if read_config(conn).path is StoragePath.TIMESCALEDB:
                    self.timescale = True
                    return False
                ran = False
                if maintenance_due:
                    self.last = maintain(conn)
                    self._log(self.last)
                    ran = True
                refresh_rollups(conn)
                return ran
        except psycopg.Error as exc:  # the task's boundary: try again next pass
            _LOG.warning("storage maintenance failed, retrying later: %s", exc)
            return False

    @staticmethod
    def _log(report: MaintenanceReport) -> None:
        if report.created or report.dropped or report.errors:
            _LOG.info(
                "storage maintenance: created %s, dropped %s, errors %s",
                report.created,
                report.dropped,
                report.errors,
            )

    def start(
        self,
        stop: threading.Event,
        spawn: Callable[..., threading.Thread] | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> threading.Thread:
        """On a thread of its own, or on one ``spawn(name, target, *args)`` starts (the
        pipeline's supervisor: the thread's end then ends the process)."""
        if spawn is not None:
            return spawn("storage-maintenance", self.run, stop, beat)
        thread = threading.Thread(
            target=self.run, args=(stop, beat), name="storage-maintenance", daemon=True
        )
        thread.start()
        return thread
