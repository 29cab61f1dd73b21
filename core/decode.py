"""Payload contract: raw MQTT payloads into validated readings, events and statuses.

Pure functions; the gateway adds what needs the registry (unknown device, wrong
class). Every refusal is a ``RejectedMessage`` with a stable reason.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from core.errors import RejectedMessage, RejectReason
from core.events import is_known_event
from core.metrics import metric_spec
from core.models import (
    DeviceEvent,
    DeviceStatus,
    EventEnvelope,
    Reading,
    StatusEnvelope,
    TelemetryEnvelope,
)
from core.senml import resolve_pack
from core.topics import Channel, DeviceTopic

__all__ = ["Decoded", "Limits", "decode"]

_M = TypeVar("_M", bound=BaseModel)

# Anything earlier is a device sending seconds where milliseconds belong, or an
# unset RTC; both would file readings decades in the past.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 64 * 1024
    max_future_s: int = 24 * 3600
    max_future: timedelta = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_future", timedelta(seconds=self.max_future_s))


_DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Decoded:
    topic: DeviceTopic
    readings: list[Reading] = field(default_factory=list)
    event: DeviceEvent | None = None
    status: DeviceStatus | None = None

    @property
    def seq(self) -> int | None:
        if self.readings:
            return self.readings[0].seq
        return self.event.seq if self.event is not None else None

    @property
    def device_time(self) -> datetime | None:
        if self.readings:
            return max(r.ts for r in self.readings)
        if self.event is not None:
            return self.event.ts
        return None


def _from_validation(exc: ValidationError) -> RejectedMessage:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return RejectedMessage(RejectReason.BAD_JSON, "payload is not valid JSON")
    if any(e["type"] == "finite_number" for e in errors):
        where = next(e["loc"] for e in errors if e["type"] == "finite_number")
        return RejectedMessage(
            RejectReason.NOT_FINITE, f"{'.'.join(map(str, where[:2]))} is NaN or infinite"
        )
    first = errors[0]
    # A union reports one error per branch; the location up to the branch is what helps.
    location = ".".join(
        str(p) for p in first["loc"] if not str(p).endswith(("int", "bool", "float"))
    )
    return RejectedMessage(RejectReason.BAD_PAYLOAD, f"{location or 'payload'}: {first['msg']}")


def _validate(model: type[_M], payload: bytes) -> _M:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise _from_validation(exc) from None


def _timestamp(value: int | datetime, received_at: datetime, limits: Limits) -> datetime:
    ts = value if isinstance(value, datetime) else datetime.fromtimestamp(value / 1000, UTC)
    if ts < EARLIEST:
        raise RejectedMessage(
            RejectReason.BAD_PAYLOAD,
            f"timestamp {ts.isoformat()} is before 2000: seconds sent instead of milliseconds?",
        )
    if ts - received_at > limits.max_future:
        raise RejectedMessage(
            RejectReason.FUTURE_TIMESTAMP,
            f"timestamp {ts.isoformat()} is more than {limits.max_future_s} s ahead of receipt",
        )
    return ts


def _checked_value(device_class: str, metric: str, value: float | bool) -> float:
    spec = metric_spec(device_class, metric)
    if spec is None:
        raise RejectedMessage(
            RejectReason.UNKNOWN_METRIC, f"{metric!r} is not a metric of class {device_class!r}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise RejectedMessage(RejectReason.NOT_FINITE, f"{metric} is NaN or infinite")
    if not spec.low <= number <= spec.high:
        raise RejectedMessage(
            RejectReason.OUT_OF_RANGE,
            f"{metric}={number:g} outside [{spec.low:g}, {spec.high:g}] {spec.unit}".rstrip(),
        )
    return number


def _telemetry(
    topic: DeviceTopic, payload: bytes, received_at: datetime, limits: Limits
) -> Decoded:
    if payload.lstrip()[:1] == b"[":
        return _senml(topic, payload, received_at, limits)
    env = _validate(TelemetryEnvelope, payload)
    ts = _timestamp(env.ts, received_at, limits)
    readings = [
        Reading(
            topic.device_id,
            metric,
            ts,
            _checked_value(topic.device_class, metric, value),
            env.seq,
            received_at,
        )
        for metric, value in env.metrics.items()
    ]
    return Decoded(topic, readings=readings)


def _not_finite(literal: str) -> float:
    raise RejectedMessage(RejectReason.NOT_FINITE, f"SenML value {literal} is not finite")


def _senml(topic: DeviceTopic, payload: bytes, received_at: datetime, limits: Limits) -> Decoded:
    try:
        pack = orjson.loads(payload)
    except orjson.JSONDecodeError:
        # orjson refuses the NaN/Infinity literals some encoders emit; say so precisely.
        with contextlib.suppress(ValueError):
            json.loads(payload, parse_constant=_not_finite)
        raise RejectedMessage(RejectReason.BAD_JSON, "payload is not valid JSON") from None
    readings = []
    for record in resolve_pack(pack, now=received_at.timestamp()):
        if record.kind not in ("v", "vb"):
            raise RejectedMessage(
                RejectReason.BAD_PAYLOAD,
                f"SenML record {record.name!r}: only numeric and boolean values are readings",
            )
        # The metric is the last segment of the resolved name (bn is usually a device URN).
        metric = record.name.replace("/", ":").rsplit(":", 1)[-1]
        ts = _timestamp(datetime.fromtimestamp(record.time, UTC), received_at, limits)
        assert isinstance(record.value, float | bool)
        value = _checked_value(topic.device_class, metric, record.value)
        readings.append(Reading(topic.device_id, metric, ts, value, None, received_at))
    return Decoded(topic, readings=readings)


def decode(
    topic: DeviceTopic, payload: bytes, received_at: datetime, limits: Limits | None = None
) -> Decoded:
    """Validate one message; raise ``RejectedMessage`` with the reason when it can't be accepted."""
    limits = limits or _DEFAULT_LIMITS
    if len(payload) > limits.max_payload_bytes:
        raise RejectedMessage(
            RejectReason.PAYLOAD_TOO_LARGE,
            f"{len(payload)} bytes exceeds the limit of {limits.max_payload_bytes}",
        )
    if topic.channel is Channel.TELEMETRY:
        return _telemetry(topic, payload, received_at, limits)
    if topic.channel is Channel.EVENT:
        env = _validate(EventEnvelope, payload)
        if not is_known_event(topic.device_class, env.event):
            raise RejectedMessage(
                RejectReason.UNKNOWN_EVENT,
                f"{env.event!r} is not an event of class {topic.device_class!r}",
            )
        ts = _timestamp(env.ts, received_at, limits)
        event = DeviceEvent(topic.device_id, env.event, ts, env.data, env.seq, received_at)
        return Decoded(topic, event=event)
    status = _validate(StatusEnvelope, payload)
    ts = received_at if status.ts is None else _timestamp(status.ts, received_at, limits)
    return Decoded(
        topic, status=DeviceStatus(topic.device_id, status.online, ts, received_at, status.clean)
    )
