"""Public request and response models. Database rows never leave the API unmapped."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.registry import DeviceClassName, RegistryId

__all__ = [
    "BucketPublic",
    "BucketsPublic",
    "CommunitiesPublic",
    "CommunityCreate",
    "CommunityPublic",
    "DeadLetterPublic",
    "DeadLettersPublic",
    "DeviceClass",
    "DeviceReadingPublic",
    "DeviceReadingsPublic",
    "EventPublic",
    "EventsPublic",
    "Health",
    "LatestPublic",
    "LatestValuesPublic",
    "Page",
    "Public",
    "ReadingPublic",
    "ReadingsPublic",
]

_IN = ConfigDict(frozen=True, extra="forbid")


class Public(BaseModel):
    """A response body (or a part of one): frozen once the route has built it."""

    model_config = ConfigDict(frozen=True)


class Page(Public):
    """One page of a listing: a subclass names what ``data`` holds; ``next_cursor`` fetches
    the next page and is None on the last."""

    data: list[Any]
    next_cursor: str | None


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}: use an IANA name such as 'Asia/Shanghai'"
        ) from None
    return value


# The registry's own checks: an id and a device class are spelled alike wherever they come in.
Id = RegistryId
DeviceClass = DeviceClassName


class CommunityCreate(BaseModel):
    model_config = _IN

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["urban", "rural"] = "urban"
    time_zone: Annotated[str, AfterValidator(_time_zone)] = "Asia/Shanghai"


class CommunityPublic(Public):
    id: str
    name: str
    kind: str
    time_zone: str
    created_at: datetime


class CommunitiesPublic(Page):
    data: list[CommunityPublic]


class ReadingPublic(Public):
    metric: str
    ts: datetime
    value: float
    seq: int | None
    received_at: datetime


class ReadingsPublic(Page):
    data: list[ReadingPublic]


class EventPublic(Public):
    event: str
    ts: datetime
    data: dict[str, Any]
    seq: int | None
    received_at: datetime


class EventsPublic(Page):
    data: list[EventPublic]


class DeadLetterPublic(Public):
    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    worker: str
    payload: str = Field(description="The raw payload, as text or base64 (see payload_encoding)")
    payload_encoding: Literal["utf-8", "base64"]
    payload_size: int = Field(description="Raw payload length in bytes, as received")
    truncated: bool = Field(
        default=False, description="Only the payload's first bytes were kept (payload limit)"
    )
    replayed_at: datetime | None = None
    replay_outcome: str | None = Field(
        default=None,
        description="The newest replay's result: stored, duplicate, rejected, truncated",
    )
    replay_reason: str | None = None


class DeadLettersPublic(Page):
    data: list[DeadLetterPublic]


class Health(Public):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
    # "failed": a worker's thread died; "stale": a running worker's heartbeat stopped;
    # "none": no worker is running (an API on its own is healthy).
    pipeline: Literal["ok", "failed", "stale", "none", "unknown"] = "unknown"
    detail: str | None = None


# --- storage queries: buckets, community series, latest values ---------------------------------


class BucketPublic(Public):
    device_id: str
    bucket: datetime = Field(description="Start of the bucket")
    value: float = Field(description="The requested aggregate over the whole bucket")
    count: int = Field(description="Readings in the bucket")


class BucketsPublic(Public):
    metric: str
    bucket: Literal["1m", "1h", "1d"]
    agg: Literal["avg", "min", "max", "count", "last"]
    time_zone: str = Field(description="Zone of the day boundaries (bucket=1d)")
    source: str = Field(description="What answered: raw readings or a rollup")
    data: list[BucketPublic]
    next_cursor: str | None


class DeviceReadingPublic(Public):
    device_id: str
    metric: str
    ts: datetime
    value: float
    seq: int | None
    received_at: datetime


class DeviceReadingsPublic(Page):
    data: list[DeviceReadingPublic]


class LatestPublic(Public):
    device_id: str
    device_class: str
    metric: str
    ts: datetime = Field(description="Device time of the newest reading")
    value: float
    received_at: datetime


class LatestValuesPublic(Page):
    data: list[LatestPublic]
