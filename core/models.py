"""Domain models.

Device-facing envelopes are frozen pydantic models that forbid unknown fields and
refuse NaN and infinity: they validate each message once, at the gateway. What
comes out of validation (``Reading``, ``DeviceEvent``, ``DeviceStatus``) is
plain frozen dataclasses and tuples: already valid, and cheap enough to make 100k a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
)

from core.limits import MAX_METRICS, SEQ_LIMIT

__all__ = [
    "Device",
    "DeviceEvent",
    "DeviceState",
    "DeviceStatus",
    "EventEnvelope",
    "Reading",
    "StatusEnvelope",
    "TelemetryEnvelope",
]

_ENVELOPE = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=False)

# Epoch milliseconds, or ISO 8601 with an offset. Naive times are refused: a
# device that does not say its zone cannot be placed on the timeline.
Timestamp = Annotated[StrictInt, Field(ge=0)] | AwareDatetime
MetricName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
MetricValue = StrictBool | StrictInt | StrictFloat
# Stored in a PostgreSQL bigint.
Seq = Annotated[StrictInt, Field(ge=0, lt=SEQ_LIMIT)]


class TelemetryEnvelope(BaseModel):
    model_config = _ENVELOPE

    ts: Timestamp
    seq: Seq | None = None
    metrics: Annotated[dict[MetricName, MetricValue], Field(min_length=1, max_length=MAX_METRICS)]


class EventEnvelope(BaseModel):
    model_config = _ENVELOPE

    ts: Timestamp
    seq: Seq | None = None
    event: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    data: dict[str, Any] = Field(default_factory=dict)


class StatusEnvelope(BaseModel):
    model_config = _ENVELOPE

    online: StrictBool
    ts: Timestamp | None = None
    # A goodbye the device sends before a deliberate DISCONNECT; a Last Will leaves
    # it out, so an offline status without it means the link was lost.
    clean: StrictBool = False


class DeviceState(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    DECOMMISSIONED = "decommissioned"


class Device(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    community_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    device_class: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    model: str = ""
    name: str = ""
    state: DeviceState = DeviceState.ACTIVE
    expected_interval_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 300


class Reading(NamedTuple):
    """One stored value. A tuple on purpose: it is made 100k times a second and goes
    straight into COPY in this column order."""

    device_id: str
    metric: str
    ts: datetime
    value: float
    seq: int | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device_id: str
    event: str
    ts: datetime
    data: dict[str, Any]
    seq: int | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_id: str
    online: bool
    ts: datetime
    received_at: datetime
    clean: bool = False  # a deliberate goodbye, not a lost link
