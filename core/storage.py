"""The storage contract: what the time-series tables are called, what they hold, how long.

Two storage paths sit behind one contract (see docs/storage.md):

- ``timescaledb``: ``readings`` and ``device_events`` are hypertables with native
  compression and retention policies; ``rollup_hourly`` and ``rollup_daily`` are
  continuous aggregates;
- ``postgresql``: the same tables range-partitioned by UTC day (with a DEFAULT
  partition as safety net) and kept by ``ingest.maintenance``; the rollups are
  tables that the ingest writer updates in each batch's transaction.

Either way the API, the benchmark and Grafana read the views ``readings_1h``
and ``readings_1d`` and the table ``latest``, with the same columns.

This module is pure: names, the configuration record and its rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

__all__ = [
    "DEFAULT_DAILY_TIME_ZONE",
    "MIN_RAW_RETENTION",
    "PARTITIONED_TABLES",
    "ROLLUP_REFRESH_MARGIN",
    "Bucket",
    "StorageConfig",
    "StoragePath",
    "day_partition_name",
    "partition_day",
    "retention_cutoff_day",
]

# Daily figures are per community time zone; this one is the default (and, on
# TimescaleDB, the zone of the daily continuous aggregate).
DEFAULT_DAILY_TIME_ZONE = "Asia/Shanghai"
# Below two days "raw retention" would fight the +24 h future window and the
# day-sized partitions: everything would be dropped as it arrives.
MIN_RAW_RETENTION = timedelta(days=2)
# A continuous aggregate's refresh window must end this far inside the raw
# retention, or a refresh would recompute a bucket whose raw rows were just
# dropped, and empty it.
ROLLUP_REFRESH_MARGIN = timedelta(days=2)
# Tables that are day-partitioned (plain PostgreSQL) or hypertables (TimescaleDB).
PARTITIONED_TABLES = ("readings", "device_events")


class StoragePath(StrEnum):
    TIMESCALEDB = "timescaledb"
    POSTGRESQL = "postgresql"


class Bucket(StrEnum):
    """Bucket widths the API offers, with what each one is read from."""

    MINUTE = "1m"
    HOUR = "1h"
    DAY = "1d"

    @property
    def width(self) -> timedelta:
        return {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}[
            self.value
        ]


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The row of ``storage_config``: one per database, shared by every worker."""

    path: StoragePath
    chunk_interval: timedelta
    compress_after: timedelta
    raw_retention: timedelta
    hourly_retention: timedelta
    daily_retention: timedelta
    partitions_ahead: int
    daily_time_zone: str

    def problems(self) -> list[str]:
        """Why this configuration would lose data or break a policy; empty when sound."""
        found = []
        if self.raw_retention < MIN_RAW_RETENTION:
            found.append(f"raw retention must be at least {MIN_RAW_RETENTION.days} days")
        if self.hourly_retention < self.raw_retention:
            found.append("hourly rollups must be kept at least as long as raw readings")
        if self.daily_retention < self.hourly_retention:
            found.append("daily rollups must be kept at least as long as hourly rollups")
        if self.compress_after < timedelta(hours=1):
            found.append("compress after at least 1 hour")
        if self.compress_after >= self.raw_retention:
            found.append("compression must start before raw retention drops the data")
        if not timedelta(minutes=1) <= self.chunk_interval <= timedelta(days=31):
            found.append("chunk interval must be between 1 minute and 31 days")
        if not 1 <= self.partitions_ahead <= 60:
            found.append("partitions ahead must be between 1 and 60 days")
        return found

    def has_daily_rollups_in(self, time_zone: str) -> bool:
        """Whether ``readings_1d`` holds the days of ``time_zone``: every community's
        own days on plain PostgreSQL, ``daily_time_zone``'s only on TimescaleDB (one
        continuous aggregate); other zones' days are merged from hourly buckets."""
        return self.path is StoragePath.POSTGRESQL or self.daily_time_zone == time_zone

    @property
    def rollup_refresh_start(self) -> timedelta:
        """How far back a continuous-aggregate refresh reaches: inside raw retention."""
        return self.raw_retention - ROLLUP_REFRESH_MARGIN


def partition_day(ts: datetime) -> date:
    """The UTC day whose partition holds ``ts``."""
    return ts.astimezone(UTC).date()


def day_partition_name(parent: str, day: date) -> str:
    return f"{parent}_p{day:%Y%m%d}"


def retention_cutoff_day(now: datetime, retention: timedelta) -> date:
    """Partitions of days before this one are wholly older than ``retention``.

    Raw data is kept at least ``retention`` and dropped within a day after: a
    partition goes when its last instant is older than the retention.
    """
    return partition_day(now - retention)
