"""``/api/v1/devices/{id}/readings`` and ``/events``: a device's time series, by time range."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from api.cursors import AfterQuery, LimitQuery, decode_position, encode_position, model_page
from api.deps import ConnDep, SettingsDep, page_size
from api.problems import unprocessable
from api.routes.devices import get_device_or_404
from api.schemas import EventPublic, EventsPublic, Public, ReadingPublic, ReadingsPublic
from api.scope import DeviceId
from core.metric_catalog import METRICS
from store.readings import device_events, device_readings

__all__ = ["DEFAULT_RANGE", "MAX_RANGE", "TimeRange", "bounded_range", "router"]

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


def bounded_range(
    start: datetime | None, end: datetime | None, default: timedelta, widest: timedelta
) -> TimeRange:
    """``[start, end)`` with a missing end ``default`` after start (or now), a missing
    start ``default`` before end; 422 if empty or wider than ``widest``."""
    if end is None:
        end = start + default if start is not None else datetime.now(UTC)
    if start is None:
        start = end - default
    if end <= start:
        raise unprocessable(("query", "end"), "end must be after start", "invalid_range")
    if end - start > widest:
        message = f"the range may span at most {widest.days} days"
        raise unprocessable(("query", "start"), message, "invalid_range")
    return TimeRange(start, end)


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
    return bounded_range(start, end, DEFAULT_RANGE, MAX_RANGE)


RangeDep = Annotated[TimeRange, Depends(time_range)]


@dataclass(frozen=True, slots=True)
class _SeriesQuery:
    window: TimeRange
    size: int
    after: str | None


def _series_query(
    settings: SettingsDep, window: RangeDep, limit: LimitQuery = None, after: AfterQuery = None
) -> _SeriesQuery:
    """The query both routes share besides their filter: the range and the page."""
    return _SeriesQuery(window, page_size(settings, limit), after)


SeriesQuery = Annotated[_SeriesQuery, Depends(_series_query)]

R = TypeVar("R")
P = TypeVar("P", bound=Public)


def _series_page(
    query: _SeriesQuery,
    fetch: Callable[..., Sequence[R]],
    public: type[P],
    position: Callable[[P], str],
) -> tuple[list[P], str | None]:
    """One page of a device's series: ``fetch(start, end, after=, limit=)`` reads the
    rows after the decoded cursor, one more than the page to know whether another follows."""
    after = decode_position(query.after, str) if query.after is not None else None
    found = fetch(query.window.start, query.window.end, after=after, limit=query.size + 1)
    return model_page(found, query.size, public, position)


@router.get("/readings")
def list_readings(
    conn: ConnDep, device_id: DeviceId, query: SeriesQuery, metric: str | None = None
) -> ReadingsPublic:
    """Readings in ``[start, end)`` ordered by (ts, metric); at most 31 days per request."""
    device = get_device_or_404(conn, device_id)
    if metric is not None and metric not in METRICS.get(device.device_class, {}):
        raise unprocessable(
            ("query", "metric"),
            f"unknown metric {metric!r} for a {device.device_class} device",
            "unknown_metric",
        )
    fetch = partial(device_readings, conn, device_id, metric=metric)
    rows, cursor = _series_page(
        query, fetch, ReadingPublic, lambda r: encode_position(r.ts, r.metric)
    )
    return ReadingsPublic(data=rows, next_cursor=cursor)


@router.get("/events")
def list_events(
    conn: ConnDep, device_id: DeviceId, query: SeriesQuery, event: str | None = None
) -> EventsPublic:
    """Events in ``[start, end)`` ordered by (ts, event); at most 31 days per request."""
    get_device_or_404(conn, device_id)
    fetch = partial(device_events, conn, device_id, event=event)
    rows, cursor = _series_page(query, fetch, EventPublic, lambda r: encode_position(r.ts, r.event))
    return EventsPublic(data=rows, next_cursor=cursor)
