"""Time-series queries over the storage contract (docs/storage.md).

- ``/devices/{id}/aggregates`` and ``/communities/{id}/aggregates``: bucketed
  values (``bucket=1m|1h|1d``, ``agg=avg|min|max|count|last``); 1m is computed
  from raw readings, 1h from ``readings_1h``, 1d from ``readings_1d`` (days in the
  community's time zone);
- ``/communities/{id}/readings``: raw readings of every device of a community;
- ``/communities/{id}/latest``: the newest value per device and metric, one
  index range read of ``latest``.

A bucket is returned when its start lies in ``[start, end)`` and always covers its
whole width, whichever source answered. Pages are capped at the server's
``max_page_size``; ``next_cursor`` continues strictly after the last row.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import AwareDatetime

from api.cursors import (
    AfterQuery,
    LimitQuery,
    decode_position,
    encode_position,
    invalid_cursor,
    model_page,
)
from api.deps import ConnDep, SettingsDep, page_size
from api.problems import unprocessable
from api.routes.devices import get_device_or_404
from api.routes.readings import bounded_range
from api.schemas import (
    BucketPublic,
    BucketsPublic,
    DeviceReadingPublic,
    DeviceReadingsPublic,
    LatestPublic,
    LatestValuesPublic,
)
from api.scope import CommunityId, DeviceId
from core.metric_catalog import METRICS
from core.storage import Bucket
from store.series import (
    Agg,
    buckets,
    community_device_ids,
    community_time_zone,
    latest_of_community,
    plan_buckets,
    readings_of_community,
)

__all__ = ["MAX_BUCKET_RANGE", "MAX_COMMUNITY_RAW_RANGE", "Agg", "router"]

router = APIRouter(tags=["time series"])

# Widest range per bucket: about 45k points at most for one device, the size of
# an export rather than a chart above that.
MAX_BUCKET_RANGE = {
    Bucket.MINUTE: timedelta(days=31),
    Bucket.HOUR: timedelta(days=400),
    Bucket.DAY: timedelta(days=3660),
}
# Without a start: a chart's usual span for each width.
DEFAULT_BUCKET_RANGE = {
    Bucket.MINUTE: timedelta(hours=1),
    Bucket.HOUR: timedelta(days=1),
    Bucket.DAY: timedelta(days=30),
}
# Raw rows of a whole community are sorted by time across devices: a day of a
# 2,000-device community at one reading a minute is already ~3 M rows to order.
MAX_COMMUNITY_RAW_RANGE = timedelta(days=1)
DEFAULT_RAW_RANGE = timedelta(hours=1)
# Buckets of 1m are counted from this origin (any UTC midnight gives the same grid).
_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
_ALL_METRICS = frozenset(m for specs in METRICS.values() for m in specs)


StartQuery = Annotated[AwareDatetime | None, Query(description="Inclusive, ISO 8601 with offset")]
EndQuery = Annotated[
    AwareDatetime | None, Query(description="Exclusive, ISO 8601 with offset; default now")
]
MetricQuery = Annotated[str, Query(description="A metric of the catalogue, e.g. heart_rate")]


def _check_metric(metric: str, known: frozenset[str] | dict[str, Any], scope: str) -> None:
    if metric not in known:
        raise unprocessable(
            ("query", "metric"),
            f"unknown metric {metric!r} for {scope}: see core/metric_catalog.py",
            "unknown_metric",
        )


def _community_or_404(conn: psycopg.Connection[Any], community_id: str) -> str:
    time_zone = community_time_zone(conn, community_id)
    if time_zone is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no community {community_id!r}")
    return time_zone


def _ceil(ts: datetime, bucket: Bucket, zone: ZoneInfo) -> datetime:
    """The first bucket start at or after ``ts``: minutes and hours on the UTC grid,
    days at local midnight of ``zone``."""
    if bucket is Bucket.DAY:
        local = ts.astimezone(zone)
        midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
        if midnight < local:
            nxt = local.date() + timedelta(days=1)
            midnight = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
        return midnight.astimezone(UTC)
    width = bucket.width
    steps = -((_ORIGIN - ts) // width)  # ceiling division of timedeltas
    return _ORIGIN + steps * width


def _encode_key(*parts: str) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_key(cursor: str, size: int) -> list[str]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise invalid_cursor() from None
    if not isinstance(parts, list) or len(parts) != size:
        raise invalid_cursor()
    if not all(isinstance(p, str) for p in parts):
        raise invalid_cursor()
    return parts


@dataclass(frozen=True, slots=True)
class _BucketQuery:
    """The query of both aggregate routes (a dependency: FastAPI reads its fields)."""

    metric: MetricQuery
    bucket: Bucket = Bucket.HOUR
    agg: Agg = Agg.AVG
    start: StartQuery = None
    end: EndQuery = None
    limit: LimitQuery = None
    after: AfterQuery = None


BucketQuery = Annotated[_BucketQuery, Depends()]


def _buckets(
    conn: psycopg.Connection[Any],
    devices: list[str],
    time_zone: str,
    query: _BucketQuery,
    size: int,
) -> BucketsPublic:
    bucket, agg = query.bucket, query.agg
    window = bounded_range(
        query.start, query.end, DEFAULT_BUCKET_RANGE[bucket], MAX_BUCKET_RANGE[bucket]
    )
    zone = ZoneInfo(time_zone)
    after_bucket, after_device = datetime(1970, 1, 1, tzinfo=UTC), ""
    if query.after is not None:
        after_bucket, after_device = decode_position(query.after, str)
    plan = plan_buckets(conn, bucket, agg, time_zone)
    params = {
        "devices": devices,
        "metric": query.metric,
        "lo": _ceil(window.start, bucket, zone),
        "hi": _ceil(window.end, bucket, zone),
        "after_bucket": after_bucket,
        "after_device": after_device,
        "limit": size + 1,
        "origin": _ORIGIN,
        "tz": time_zone,
    }
    found = buckets(conn, plan, params)
    rows, cursor = model_page(
        found, size, BucketPublic, lambda r: encode_position(r.bucket, r.device_id)
    )
    return BucketsPublic(
        metric=query.metric,
        bucket=bucket.value,
        agg=agg.value,
        time_zone=time_zone,
        source=plan.source,
        data=rows,
        next_cursor=cursor,
    )


@router.get("/devices/{device_id}/aggregates")
def device_aggregates(
    conn: ConnDep, settings: SettingsDep, device_id: DeviceId, query: BucketQuery
) -> BucketsPublic:
    """One device's ``metric`` in buckets whose start lies in ``[start, end)``.

    1m buckets come from raw readings, 1h and 1d from rollups; 1d buckets are
    days in the time zone of the device's community.
    """
    device = get_device_or_404(conn, device_id)
    kind = device.device_class
    _check_metric(query.metric, METRICS.get(kind, {}), f"a {kind} device")
    time_zone = _community_or_404(conn, device.community_id)
    return _buckets(conn, [device_id], time_zone, query, page_size(settings, query.limit))


@router.get("/communities/{community_id}/aggregates")
def community_aggregates(
    conn: ConnDep, settings: SettingsDep, community_id: CommunityId, query: BucketQuery
) -> BucketsPublic:
    """Every device of a community, ``metric`` in buckets, ordered by (bucket, device_id)."""
    _check_metric(query.metric, _ALL_METRICS, "any device class")
    time_zone = _community_or_404(conn, community_id)
    devices = community_device_ids(conn, community_id)
    return _buckets(conn, devices, time_zone, query, page_size(settings, query.limit))


@router.get("/communities/{community_id}/readings")
def community_readings(
    conn: ConnDep,
    settings: SettingsDep,
    community_id: CommunityId,
    metric: MetricQuery,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> DeviceReadingsPublic:
    """Raw ``metric`` readings of every device of a community in ``[start, end)``,
    ordered by (ts, device_id); at most one day per request."""
    _check_metric(metric, _ALL_METRICS, "any device class")
    _community_or_404(conn, community_id)
    window = bounded_range(start, end, DEFAULT_RAW_RANGE, MAX_COMMUNITY_RAW_RANGE)
    size = page_size(settings, limit)
    after_ts, after_device = datetime(1970, 1, 1, tzinfo=UTC), ""
    if after is not None:
        after_ts, after_device = decode_position(after, str)
    found = readings_of_community(
        conn,
        community_id,
        metric,
        window.start,
        window.end,
        after=(after_ts, after_device),
        limit=size + 1,
    )
    rows, cursor = model_page(
        found, size, DeviceReadingPublic, lambda r: encode_position(r.ts, r.device_id)
    )
    return DeviceReadingsPublic(data=rows, next_cursor=cursor)


@router.get("/communities/{community_id}/latest")
def community_latest(
    conn: ConnDep,
    settings: SettingsDep,
    community_id: CommunityId,
    metric: Annotated[str | None, Query(description="Only this metric")] = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> LatestValuesPublic:
    """The newest value (by device time) of every device and metric of a community,
    ordered by (device_id, metric)."""
    if metric is not None:
        _check_metric(metric, _ALL_METRICS, "any device class")
    _community_or_404(conn, community_id)
    size = page_size(settings, limit)
    after_device, after_metric = _decode_key(after, 2) if after is not None else ("", "")
    found = latest_of_community(
        conn, community_id, metric, after=(after_device, after_metric), limit=size + 1
    )
    rows, cursor = model_page(
        found, size, LatestPublic, lambda r: _encode_key(r.device_id, r.metric)
    )
    return LatestValuesPublic(data=rows, next_cursor=cursor)
