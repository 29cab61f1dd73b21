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
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AwareDatetime

from api.cursors import (
    AfterQuery,
    LimitQuery,
    decode_position,
    encode_position,
    invalid_cursor,
    page,
)
from api.deps import ConnDep, SettingsDep, page_size
from api.routes.devices import get_device_or_404
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


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    end: datetime


def _error(field: str, msg: str, kind: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["query", field], "msg": msg, "type": kind}],
    )


def _window(
    start: datetime | None, end: datetime | None, default: timedelta, widest: timedelta
) -> _Window:
    if end is None:
        end = start + default if start is not None else datetime.now(UTC)
    if start is None:
        start = end - default
    if end <= start:
        raise _error("end", "end must be after start", "invalid_range")
    if end - start > widest:
        raise _error("start", f"the range may span at most {widest.days} days", "invalid_range")
    return _Window(start, end)


def _check_metric(metric: str, known: frozenset[str] | dict[str, Any], scope: str) -> None:
    if metric not in known:
        raise _error(
            "metric",
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


def _buckets(
    conn: psycopg.Connection[Any],
    *,
    devices: list[str],
    metric: str,
    bucket: Bucket,
    agg: Agg,
    time_zone: str,
    start: datetime | None,
    end: datetime | None,
    size: int,
    after: str | None,
) -> BucketsPublic:
    window = _window(start, end, DEFAULT_BUCKET_RANGE[bucket], MAX_BUCKET_RANGE[bucket])
    zone = ZoneInfo(time_zone)
    after_bucket, after_device = datetime(1970, 1, 1, tzinfo=UTC), ""
    if after is not None:
        after_bucket, after_device = decode_position(after, str)
    plan = plan_buckets(conn, bucket, agg, time_zone)
    params = {
        "devices": devices,
        "metric": metric,
        "lo": _ceil(window.start, bucket, zone),
        "hi": _ceil(window.end, bucket, zone),
        "after_bucket": after_bucket,
        "after_device": after_device,
        "limit": size + 1,
        "origin": _ORIGIN,
        "tz": time_zone,
    }
    rows, cursor = page(
        buckets(conn, plan, params),
        size,
        lambda r: BucketPublic.model_validate(r, from_attributes=True),
        lambda r: encode_position(r.bucket, r.device_id),
    )
    return BucketsPublic(
        metric=metric,
        bucket=bucket.value,
        agg=agg.value,
        time_zone=time_zone,
        source=plan.source,
        data=rows,
        next_cursor=cursor,
    )


@router.get("/devices/{device_id}/aggregates")
def device_aggregates(
    conn: ConnDep,
    settings: SettingsDep,
    device_id: DeviceId,
    metric: MetricQuery,
    bucket: Bucket = Bucket.HOUR,
    agg: Agg = Agg.AVG,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> BucketsPublic:
    """One device's ``metric`` in buckets whose start lies in ``[start, end)``.

    1m buckets come from raw readings, 1h and 1d from rollups; 1d buckets are
    days in the time zone of the device's community.
    """
    device = get_device_or_404(conn, device_id)
    _check_metric(metric, METRICS.get(device.device_class, {}), f"a {device.device_class} device")
    time_zone = _community_or_404(conn, device.community_id)
    return _buckets(
        conn,
        devices=[device_id],
        metric=metric,
        bucket=bucket,
        agg=agg,
        time_zone=time_zone,
        start=start,
        end=end,
        size=page_size(settings, limit),
        after=after,
    )


@router.get("/communities/{community_id}/aggregates")
def community_aggregates(
    conn: ConnDep,
    settings: SettingsDep,
    community_id: CommunityId,
    metric: MetricQuery,
    bucket: Bucket = Bucket.HOUR,
    agg: Agg = Agg.AVG,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> BucketsPublic:
    """Every device of a community, ``metric`` in buckets, ordered by (bucket, device_id)."""
    _check_metric(metric, _ALL_METRICS, "any device class")
    time_zone = _community_or_404(conn, community_id)
    devices = community_device_ids(conn, community_id)
    return _buckets(
        conn,
        devices=devices,
        metric=metric,
        bucket=bucket,
        agg=agg,
        time_zone=time_zone,
        start=start,
        end=end,
        size=page_size(settings, limit),
        after=after,
    )


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
    window = _window(start, end, DEFAULT_RAW_RANGE, MAX_COMMUNITY_RAW_RANGE)
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
    rows, cursor = page(
        found,
        size,
        lambda r: DeviceReadingPublic.model_validate(r, from_attributes=True),
        lambda r: encode_position(r.ts, r.device_id),
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
    rows, cursor = page(
        found,
        size,
        lambda r: LatestPublic.model_validate(r, from_attributes=True),
        lambda r: _encode_key(r.device_id, r.metric),
    )
    return LatestValuesPublic(data=rows, next_cursor=cursor)
