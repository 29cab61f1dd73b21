"""The storage contract's rules, without a database."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest

from core.storage import (
    Bucket,
    StorageConfig,
    StoragePath,
    day_partition_name,
    partition_day,
    retention_cutoff_day,
)
from ingest.writer import merge_statements

DEFAULTS = StorageConfig(
    path=StoragePath.POSTGRESQL,
    chunk_interval=timedelta(days=1),
    compress_after=timedelta(days=7),
    raw_retention=timedelta(days=400),
    hourly_retention=timedelta(days=1100),
    daily_retention=timedelta(days=3660),
    partitions_ahead=7,
    daily_time_zone="Asia/Shanghai",
)


def test_the_defaults_are_sound() -> None:
    assert DEFAULTS.problems() == []
    assert DEFAULTS.rollup_refresh_start == timedelta(days=398)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"raw_retention": timedelta(days=1), "compress_after": timedelta(hours=1)},
            "raw retention must be at least 2 days",
        ),
        ({"hourly_retention": timedelta(days=300)}, "hourly rollups must be kept at least"),
        ({"daily_retention": timedelta(days=1000)}, "daily rollups must be kept at least"),
        ({"compress_after": timedelta(days=400)}, "compression must start before raw retention"),
        ({"chunk_interval": timedelta(days=90)}, "chunk interval must be between"),
        ({"partitions_ahead": 0}, "partitions ahead must be between"),
    ],
)
def test_unsafe_settings_are_named(change: dict[str, object], problem: str) -> None:
    found = dataclasses.replace(DEFAULTS, **change).problems()  # type: ignore[arg-type]
    assert len(found) == 1
    assert found[0].startswith(problem)


def test_partitions_are_utc_days() -> None:
    beijing_evening = datetime.fromisoformat("2026-11-29T23:30:00+08:00")
    assert partition_day(beijing_evening) == date(2026, 11, 29)
    assert partition_day(datetime.fromisoformat("2026-11-30T07:30:00+08:00")) == date(2026, 11, 29)
    assert day_partition_name("readings", date(2026, 1, 2)) == "readings_p20260102"


def test_retention_keeps_whole_days_at_least_as_long_as_asked() -> None:
    now = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    cutoff = retention_cutoff_day(now, timedelta(days=400))
    # A partition is dropped when its day ends on or before the cutoff day's start.
    last_dropped_day_ends = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    assert now - last_dropped_day_ends >= timedelta(days=400)
    assert now - last_dropped_day_ends < timedelta(days=401)


def test_bucket_widths() -> None:
    assert [b.width for b in Bucket] == [
        timedelta(minutes=1),
        timedelta(hours=1),
        timedelta(days=1),
    ]


def test_merge_statements_per_path() -> None:
    plain = merge_statements(StoragePath.POSTGRESQL, on_conflict=True)
    timescale = merge_statements(StoragePath.TIMESCALEDB, on_conflict=False)
    assert b"ON CONFLICT DO NOTHING" in plain.insert
    assert b"ON CONFLICT" not in timescale.insert
    assert plain.dirty is not None  # the plain path notes hours for the rollup refresh
    assert b"rollup_dirty" in plain.dirty
    assert timescale.dirty is None  # continuous aggregates track their own
    # latest only moves forward in device time, whichever statement moves it
    assert b"s.fresh > l.ts" in plain.latest_update
    assert b"WHERE excluded.ts > l.ts" in plain.latest_upsert
