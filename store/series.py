"""The time-series reads of the API: raw readings and events, and buckets from raw
rows or the rollups. Row-level security applies as the caller's role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from core.models import Reading
from core.storage import Bucket
from store.rows import Conn, records, scalar
from store.storage_config import read_config

__all__ = [
    "COMMUNITY_READINGS",
    "DEVICE_EVENTS",
    "DEVICE_READINGS",
    "Agg",
    "BucketRecord",
    "LatestValue",
    "SeriesPlan",
    "buckets",
    "community_device_ids",
    "community_time_zone",
    "latest_of_community",
    "plan_buckets",
    "readings_of_community",
]


DEVICE_READINGS = sql.SQL(
    "SELECT device_id, metric, ts, value, seq, received_at FROM readings"
    " WHERE device_id = %s AND ts >= %s AND ts < %s{}"
    " ORDER BY ts, metric LIMIT %s"
)
DEVICE_EVENTS = sql.SQL(
    "SELECT device_id, event, ts, data, seq, received_at FROM device_events"
    " WHERE device_id = %s AND ts >= %s AND ts < %s{}"
    " ORDER BY ts, event LIMIT %s"
)

COMMUNITY_READINGS = (
    "SELECT r.device_id, r.metric, r.ts, r.value, r.seq, r.received_at"
    " FROM readings AS r JOIN devices AS d ON d.id = r.device_id"
    " WHERE d.community_id = %(community)s AND r.metric = %(metric)s"
    " AND r.ts >= %(start)s AND r.ts < %(end)s"
    " AND (r.ts, r.device_id) > (%(after_ts)s, %(after_device)s)"
    " ORDER BY r.ts, r.device_id LIMIT %(limit)s"
)


class Agg(StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    COUNT = "count"
    LAST = "last"


# The aggregate over raw readings, and over rollup rows merged into a coarser bucket.
_RAW_AGG = {
    Agg.AVG: "avg(value)",
    Agg.MIN: "min(value)",
    Agg.MAX: "max(value)",
    Agg.COUNT: "count(*)::float8",
    Agg.LAST: "(array_agg(value ORDER BY ts DESC))[1]",
}
_MERGED_AGG = {
    Agg.AVG: "sum(sum) / sum(count)",
    Agg.MIN: "min(min)",
    Agg.MAX: "max(max)",
    Agg.COUNT: "sum(count)::float8",
    Agg.LAST: "(array_agg(last ORDER BY last_ts DESC))[1]",
}


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    query: sql.Composed
    source: str


# Buckets computed at query time: rows of ``table`` grouped by ``bucket``, then the page.
_GROUPED = (
    "SELECT * FROM (SELECT device_id, {bucket} AS bucket, {agg} AS value, {count} AS count"
    " FROM {table} WHERE device_id = ANY(%(devices)s) AND metric = %(metric)s"
    " AND {time} >= greatest(%(lo)s, %(after_bucket)s) AND {time} < %(hi)s GROUP BY 1, 2) AS b"
    " WHERE (bucket, device_id) > (%(after_bucket)s, %(after_device)s)"
    " ORDER BY bucket, device_id LIMIT %(limit)s"
)


def _grouped(table: str, bucket: str, agg: str, count: str) -> SeriesPlan:
    time = "ts" if table == "readings" else "bucket"
    query = sql.SQL(_GROUPED).format(
        bucket=sql.SQL(bucket),
        agg=sql.SQL(agg),
        count=sql.SQL(count),
        table=sql.Identifier(table),
        time=sql.Identifier(time),
    )
    return SeriesPlan(query, table)


def plan_buckets(
    conn: psycopg.Connection[Any], bucket: Bucket, agg: Agg, time_zone: str
) -> SeriesPlan:
    """Pick the source of the buckets: raw rows, the hourly or the daily rollup.

    The devices' filter, the range and the keyset position are parameters:
    ``devices`` (text[]), ``metric``, ``lo``, ``hi``, ``after_bucket``, ``after_device``.
    """
    if bucket is Bucket.MINUTE:
        minute = "date_bin(INTERVAL '1 minute', ts, %(origin)s)"
        return _grouped("readings", minute, _RAW_AGG[agg], "count(*)")
    config = read_config(conn)
    if bucket is Bucket.HOUR:
        view, source = "readings_1h", "readings_1h"
    elif config.has_daily_rollups_in(time_zone):
        view, source = "readings_1d", "readings_1d"
    else:
        # TimescaleDB's daily aggregate is in one zone; other zones' days are
        # merged from hourly buckets (exact for zones with whole-hour offsets).
        day = "date_trunc('day', bucket, %(tz)s)"
        return _grouped("readings_1h", day, _MERGED_AGG[agg], "sum(count)::bigint")
    value = sql.SQL("{}::float8").format(sql.Identifier(agg.value))
    query = sql.SQL(
        "SELECT device_id, bucket, {value} AS value, count FROM {view}"
        " WHERE device_id = ANY(%(devices)s) AND metric = %(metric)s"
        " AND bucket >= %(lo)s AND bucket < %(hi)s"
        " AND (bucket, device_id) > (%(after_bucket)s, %(after_device)s)"
        " ORDER BY bucket, device_id LIMIT %(limit)s"
    ).format(value=value, view=sql.Identifier(view))
    return SeriesPlan(query, source)


@dataclass(frozen=True, slots=True)
class BucketRecord:
    device_id: str
    bucket: datetime
    value: float
    count: int


@dataclass(frozen=True, slots=True)
class LatestValue:
    device_id: str
    device_class: str
    metric: str
    ts: datetime
    value: float
    received_at: datetime


_LATEST = sql.SQL(
    "SELECT l.device_id, d.device_class, l.metric, l.ts, l.value, l.received_at"
    " FROM latest AS l JOIN devices AS d ON d.id = l.device_id"
    " WHERE l.community_id = %(community)s{filters}"
    " AND (l.device_id, l.metric) > (%(after_device)s, %(after_metric)s)"
    " ORDER BY l.device_id, l.metric LIMIT %(limit)s"
)


def community_time_zone(conn: Conn, community_id: str) -> str | None:
    """The community's time zone (its days' boundaries); None: no such community."""
    return scalar(conn, str, "SELECT time_zone FROM communities WHERE id = %s", (community_id,))


def community_device_ids(conn: Conn, community_id: str) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute("SELECT id FROM devices WHERE community_id = %s", (community_id,))
    ]


def buckets(conn: Conn, plan: SeriesPlan, params: dict[str, Any]) -> list[BucketRecord]:
    """The rows of ``plan`` for its parameters (``plan_buckets``), in keyset order."""
    return records(conn, BucketRecord, plan.query, params)


def readings_of_community(
    conn: Conn,
    community_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    *,
    after: tuple[datetime, str],
    limit: int,
) -> list[Reading]:
    """Raw ``metric`` readings of a community's devices in ``[start, end)``, strictly
    after the (ts, device_id) position ``after``, ordered by (ts, device_id)."""
    params = {
        "community": community_id,
        "metric": metric,
        "start": start,
        "end": end,
        "after_ts": after[0],
        "after_device": after[1],
        "limit": limit,
    }
    return records(conn, Reading, COMMUNITY_READINGS, params)


def latest_of_community(
    conn: Conn,
    community_id: str,
    metric: str | None,
    *,
    after: tuple[str, str],
    limit: int,
) -> list[LatestValue]:
    """The newest value of every device and metric of a community (only ``metric``'s
    when given), strictly after the (device_id, metric) position ``after``."""
    filters = sql.SQL(" AND l.metric = %(metric)s") if metric is not None else sql.SQL("")
    params = {
        "community": community_id,
        "metric": metric,
        "after_device": after[0],
        "after_metric": after[1],
        "limit": limit,
    }
    return records(conn, LatestValue, _LATEST.format(filters=filters), params)
