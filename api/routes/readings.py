"""``/api/v1/devices/{id}/readings`` and ``/events``: a device's time series, by time range."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AwareDatetime

from api.cursors import AfterQuery, LimitQuery, decode_position, encode_position, page
from api.deps import ConnDep, SettingsDep, page_size
from api.problems import unprocessable
from api.routes.devices import get_device_or_404
from api.schemas import EventPublic, EventsPublic, Public, ReadingPublic, ReadingsPublic
from api.scope import DeviceId
from core.metric_catalog import METRICS
from core.settings import Settings
from store.readings import device_events, device_readings

__all__ = ["DEFAULT_RANGE", "MAX_RANGE", "TimeRange", "router"]

router = APIRouter(prefix="/devices/{device_id}", tags=["readings"])

# Without a start, the last hour: what an installer checking a device wants to see.
DEFAULT_RANGE = timedelta(hours=1)
# A month of one device at one reading a second is ~2.7 M rows per metric: a query
# wider than that is an export, not an API call.
MAX_RANGE = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime


def _range_error(field: str, msg: str) -> HTTPException:
    return unprocessable(("query", field), msg, "invalid_range")


def time_range(
    start: Annotated[
        AwareDatetime | None,
        Query(description="Inclusive, ISO 8601 with offset; default end - 1 hour"),
    ] = None,
    end: Annotated[
        AwareDatetime | None,
        Query(description="Exclusive, ISO 8601 with offset; default start + 1 hour, or now"),
    ] = None,
) -> TimeRange:
    if end is None:
        end = start + DEFAULT_RANGE if start is not None else datetime.now(UTC)
    if start is None:
        start = end - DEFAULT_RANGE
    if end <= start:
        raise _range_error("end", "end must be after start")
    if end - start > MAX_RANGE:
        raise _range_error("start", f"the range may span at most {MAX_RANGE.days} days")
    return TimeRange(start, end)


RangeDep = Annotated[TimeRange, Depends(time_range)]

R = TypeVar("R")
P = TypeVar("P", bound=Public)


def _series_page(
    settings: Settings,
    limit: int | None,
    after: str | None,
    fetch: Callable[[tuple[datetime, str] | None, int], Sequence[R]],
    public: type[P],
    position: Callable[[P], str],
) -> tuple[list[P], str | None]:
    """One page of a device's series: ``fetch(after, limit)`` reads the rows after the
    decoded cursor, one more than the page to know whether another follows."""
    size = page_size(settings, limit)
    found = fetch(decode_position(after, str) if after is not None else None, size + 1)
    return page(found, size, lambda r: public.model_validate(r, from_attributes=True), position)


@router.get("/readings")
def list_readings(
    conn: ConnDep,
    settings: SettingsDep,
    device_id: DeviceId,
    window: RangeDep,
    metric: str | None = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> ReadingsPublic:
    """Readings in ``[start, end)`` ordered by (ts, metric); at most 31 days per request."""
    device = get_device_or_404(conn, device_id)
    if metric is not None and metric not in METRICS.get(device.device_class, {}):
        raise unprocessable(
            ("query", "metric"),
            f"unknown metric {metric!r} for a {device.device_class} device",
            "unknown_metric",
        )
    rows, cursor = _series_page(
        settings,
        limit,
        after,
        lambda position, size: device_readings(
            conn, device_id, window.start, window.end, metric=metric, after=position, limit=size
        ),
        ReadingPublic,
        lambda r: encode_position(r.ts, r.metric),
    )
    return ReadingsPublic(data=rows, next_cursor=cursor)


@router.get("/events")
def list_events(
    conn: ConnDep,
    settings: SettingsDep,
    device_id: DeviceId,
    window: RangeDep,
    event: str | None = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> EventsPublic:
    """Events in ``[start, end)`` ordered by (ts, event); at most 31 days per request."""
    get_device_or_404(conn, device_id)
    rows, cursor = _series_page(
        settings,
        limit,
        after,
        lambda position, size: device_events(
            conn, device_id, window.start, window.end, event=event, after=position, limit=size
        ),
        EventPublic,
        lambda r: encode_position(r.ts, r.event),
    )
    return EventsPublic(data=rows, next_cursor=cursor)
