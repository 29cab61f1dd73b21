"""Payload contract: raw MQTT payloads into validated readings, events and statuses.

Pure functions; the gateway adds what needs the registry (unknown device, wrong
class). Every refusal is a ``RejectedMessage`` with a stable reason.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from core.errors import RejectedMessage, RejectReason
from core.events import is_known_event
from core.limits import (
    EARLIEST,
    EARLIEST_S,
    MAX_DATA_NODES,
    MAX_METRICS,
    SEQ_LIMIT,
    check_depth,
    check_text,
    refine_json_error,
)
from core.metric_catalog import METRICS, MetricSpec, metric_spec
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
# Aware datetimes are compared with each other in UTC; a year at the edge of what
# datetime holds overflows on the way there, so years are bounded first.
_LAST_YEAR = 9998
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
EARLIEST_MS = (EARLIEST - _EPOCH) // _MS


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits that are settings; the fixed ones are in ``core.limits``."""

    max_payload_bytes: int = 64 * 1024
    max_future_s: int = 24 * 3600
    max_future: timedelta = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_future", timedelta(seconds=self.max_future_s))


_DEFAULT_LIMITS = Limits()
_new_reading = tuple.__new__


@dataclass(slots=True)
class Decoded:
    topic: DeviceTopic
    readings: list[Reading] = field(default_factory=list)
    event: DeviceEvent | None = None
    status: DeviceStatus | None = None
    # Known without a scan when every reading has one time (a telemetry object).
    known_time: datetime | None = None

    @property
    def seq(self) -> int | None:
        if self.readings:
            return self.readings[0].seq
        return self.event.seq if self.event is not None else None

    @property
    def device_time(self) -> datetime | None:
        if self.known_time is not None:
            return self.known_time
        if self.readings:
            return max(r.ts for r in self.readings)
        if self.event is not None:
            return self.event.ts
        return None


def _from_validation(exc: ValidationError, payload: bytes) -> RejectedMessage:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return refine_json_error(payload)
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
    return RejectedMessage(
        RejectReason.BAD_PAYLOAD, _short(f"{location or 'payload'}: {first['msg']}")
    )


def _short(detail: str) -> str:
    """Details quote the device's input: keep them a readable size."""
    return detail if len(detail) <= 200 else detail[:200] + "…"


def _validate(model: type[_M], payload: bytes) -> _M:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise _from_validation(exc, payload) from None


def _too_early(detail: object) -> RejectedMessage:
    return RejectedMessage(
        RejectReason.BAD_PAYLOAD,
        f"timestamp {detail} is before 2000: seconds sent instead of milliseconds?",
    )


def _too_late(detail: object, limits: Limits) -> RejectedMessage:
    return RejectedMessage(
        RejectReason.FUTURE_TIMESTAMP,
        f"timestamp {detail} is more than {limits.max_future_s} s ahead of receipt",
    )


def epoch_time(seconds: float, received_at: datetime, limits: Limits) -> datetime:
    """Epoch seconds into a datetime, bounded (2000 … receipt + max_future) before conversion."""
    if seconds < EARLIEST_S:
        raise _too_early(f"{seconds:.0f} s")
    if seconds > received_at.timestamp() + limits.max_future_s + 1:
        raise _too_late(f"{seconds:.0f} s", limits)
    ts = datetime.fromtimestamp(seconds, UTC)
    # Again on the datetime: the float compared above may round either way by a microsecond.
    if ts < EARLIEST:
        raise _too_early(ts.isoformat())
    if ts - received_at > limits.max_future:
        raise _too_late(ts.isoformat(), limits)
    return ts


def _timestamp(value: int | datetime, received_at: datetime, limits: Limits) -> datetime:
    if not isinstance(value, datetime):
        # Integer milliseconds, compared and converted exactly: a 400-digit one never
        # meets a float, and a time at the limit does not round past it.
        if value < EARLIEST_MS:
            raise _too_early(f"{value} ms")
        if value > (received_at + limits.max_future - _EPOCH) // _MS:
            raise _too_late(f"{_short(str(value))} ms", limits)
        return _EPOCH + value * _MS
    if value.year < EARLIEST.year - 1:
        raise _too_early(value.isoformat())
    if value.year > _LAST_YEAR:
        raise _too_late(value.isoformat(), limits)
    if value < EARLIEST:
        raise _too_early(value.isoformat())
    if value - received_at > limits.max_future:
        raise _too_late(value.isoformat(), limits)
    return value


def _checked_value(
    device_class: str, metric: str, value: float | bool, specs: dict[str, MetricSpec] | None = None
) -> float:
    spec = metric_spec(device_class, metric) if specs is None else specs.get(metric)
    if spec is None:
        raise RejectedMessage(
            RejectReason.UNKNOWN_METRIC,
            f"{_short(repr(metric))} is not a metric of class {device_class!r}",
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise RejectedMessage(RejectReason.NOT_FINITE, f"{metric} is NaN or infinite")
    # Compared before conversion: an integer of any size compares exactly with a float.
    if not spec.low <= value <= spec.high:
        shown = f"{value:g}" if isinstance(value, float) else _short(str(int(value)))
        raise RejectedMessage(
            RejectReason.OUT_OF_RANGE,
            f"{metric}={shown} outside [{spec.low:g}, {spec.high:g}] {spec.unit}".rstrip(),
        )
    return float(value)


def _check_data(data: object) -> None:
    """Event data goes into jsonb and to the rule engine: bound its strings and size."""
    nodes = 0
    pending = [data]
    while pending:
        item = pending.pop()
        nodes += 1
        if nodes > MAX_DATA_NODES:
            raise RejectedMessage(
                RejectReason.TOO_MANY_VALUES, f"event data has more than {MAX_DATA_NODES} values"
            )
        if isinstance(item, str):
            check_text(item, "an event data string")
        elif isinstance(item, dict):
            for key in item:
                check_text(key, "an event data key")
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


# The envelope's common shape, recognised without pydantic (_plain_envelope): an ISO
# 8601 time with seconds, up to microseconds and a zone; a metric name as the model's.
_PLAIN_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
# The catalog's names match the pattern: known without the regex.
_CATALOG_NAMES = frozenset(name for table in METRICS.values() for name in table)
_PLAIN_VALUE = (int, float, bool)
_FLOAT_EXACT_BOUND = 2.0**63


def _plain_envelope(
    payload: bytes,
) -> tuple[int | datetime, int | None, dict[str, float | bool]] | None:
    """The telemetry envelope of an ordinary message, read with orjson: (ts, seq, metrics).

    Only what ``TelemetryEnvelope`` accepts, with the same values, is taken; anything
    else (None) goes to the model, which accepts or says precisely why not. A third of
    the intake thread's time was the model's validation of messages like these."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or len(doc) != (3 if "seq" in doc else 2):
        return None
    ts, metrics, seq = doc.get("ts"), doc.get("metrics"), doc.get("seq")
    if type(metrics) is not dict or not 1 <= len(metrics) <= MAX_METRICS:
        return None
    if seq is not None and not (type(seq) is int and 0 <= seq < SEQ_LIMIT):
        return None
    when: int | datetime
    if type(ts) is int and ts >= 0:
        when = ts
    elif type(ts) is str and _PLAIN_TIME.fullmatch(ts):
        try:
            when = datetime.fromisoformat(ts)
        except ValueError:
            return None
    else:
        return None
    for name, value in metrics.items():
        if type(value) not in _PLAIN_VALUE:
            return None
        if name not in _CATALOG_NAMES and not _METRIC_NAME.fullmatch(name):
            return None
        # orjson reads an integer past 64 bits as a float, which the model keeps exact.
        if type(value) is float and not abs(value) < _FLOAT_EXACT_BOUND:  # also NaN, inf
            return None
    return when, seq, metrics


def _telemetry(
    topic: DeviceTopic, payload: bytes, received_at: datetime, limits: Limits
) -> Decoded:
    if payload.lstrip()[:1] == b"[":
        return _senml(topic, payload, received_at, limits)
    plain = _plain_envelope(payload)
    if plain is None:
        env = _validate(TelemetryEnvelope, payload)
        plain = (env.ts, env.seq, env.metrics)
    when, seq, values = plain
    ts = _timestamp(when, received_at, limits)
    device_id, device_class = topic.device_id, topic.device_class
    specs = METRICS.get(device_class, {})  # the class's table, looked up once a message
    # _new_reading skips the NamedTuple's Python-level __new__: an eighth of the
    # intake thread's time in the profile, for three readings a message.
    readings = [
        _new_reading(
            Reading,
            (
                device_id,
                metric,
                ts,
                _checked_value(device_class, metric, value, specs),
                seq,
                received_at,
            ),
        )
        for metric, value in values.items()
    ]
    return Decoded(topic, readings=readings, known_time=ts)


def _not_finite(literal: str) -> float:
    raise RejectedMessage(RejectReason.NOT_FINITE, f"SenML value {literal} is not finite")


def _senml(topic: DeviceTopic, payload: bytes, received_at: datetime, limits: Limits) -> Decoded:
    try:
        pack = orjson.loads(payload)
    except orjson.JSONDecodeError:
        # orjson refuses integers past 64 bits and the NaN/Infinity literals some
        # encoders emit; the standard parser takes the first (then bounded like any
        # number) and says precisely why for the second. The depth was checked first,
        # so it cannot recurse too far; strict UTF-8 keeps it from guessing UTF-16.
        try:
            pack = json.loads(payload.decode("utf-8"), parse_constant=_not_finite)
        except ValueError:
            raise refine_json_error(payload) from None
    readings = []
    for record in resolve_pack(pack, now=received_at.timestamp()):
        if record.kind not in ("v", "vb"):
            raise RejectedMessage(
                RejectReason.BAD_PAYLOAD,
                f"SenML record {record.name!r}: only numeric and boolean values are readings",
            )
        # The metric is the last segment of the resolved name (bn is usually a device URN).
        metric = record.name.replace("/", ":").rsplit(":", 1)[-1]
        ts = epoch_time(record.time, received_at, limits)
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
    check_depth(payload)
    if topic.channel is Channel.TELEMETRY:
        return _telemetry(topic, payload, received_at, limits)
    if topic.channel is Channel.EVENT:
        env = _validate(EventEnvelope, payload)
        _check_data(env.data)
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


# For the other decoders (core.profile_decode): the same checks under public names.
checked_value = _checked_value
check_event_data = _check_data
device_timestamp = _timestamp
