"""From data units to canonical platform messages. Pure: no I/O.

Each panel system, component and the UITD itself is a platform device (a
"point"). A status word becomes events by comparing it with the last status
whose events were committed: a bit that turns on is its event (``fire_alarm``),
one that turns off is ``<event>_cleared``; reset and "configuration changed" are
moments with no clearing. Operation records are moments too. Analog values
become readings in the catalogue's units. The messages are the native JSON
envelope on the device's own topics, and each names the row it will be stored as
(its natural key), which is how the bridge learns that it was committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, NamedTuple

import orjson

from core.decode import Limits, decode
from core.errors import RejectedMessage, RejectReason
from core.gbt26875 import TimeLabel, format_address
from core.gbt26875_units import (
    ANALOG_TYPES,
    ClockSync,
    ComponentAnalog,
    ComponentStatus,
    DataUnit,
    DutyCheck,
    OperationRecord,
    SystemStatus,
    UitdOperation,
    UitdStatus,
    UitdTime,
)
from core.topics import device_topic, parse_topic

__all__ = [
    "Canonical",
    "CommitKey",
    "Point",
    "PointSpec",
    "Translation",
    "Uitd",
    "point_specs",
    "status_events",
    "translate",
]

DEVICE_CLASS = "fire"
# Status before a point's first report: running normally, nothing set.
NORMAL = 0x0001
# Bit -> event of a state that lasts; its clearing is "<event>_cleared".
SYSTEM_BITS = {
    1: "fire_alarm",
    2: "fault",
    3: "shield",
    4: "supervisory",
    5: "started",
    6: "feedback",
    7: "delay",
    8: "main_power_fault",
    9: "backup_power_fault",
    10: "bus_fault",
    11: "manual_mode",
}
SYSTEM_MOMENTS = {12: "config_changed", 13: "reset"}
COMPONENT_BITS = {**{b: SYSTEM_BITS[b] for b in range(1, 8)}, 8: "power_fault"}
UITD_BITS = {
    1: "fire_alarm",
    2: "fault",
    3: "main_power_fault",
    4: "backup_power_fault",
    5: "link_fault",  # the UITD's channel to the centre
    6: "line_fault",  # the UITD's line to the panel
}
OPERATION_FLAGS = {
    0: "reset",
    1: "silenced",
    2: "manual_alarm",
    3: "alarm_cleared",
    4: "self_test",
    5: "operator_confirmed",
    6: "test",
}
UITD_OPERATION_FLAGS = {**OPERATION_FLAGS, 5: "duty_check_answered"}


@dataclass(frozen=True, slots=True)
class Uitd:
    device_id: str
    community_id: str
    building: str | None
    address: bytes
    auto_provision: bool
    heartbeat_s: int
    state: str
    zone: tzinfo


@dataclass(frozen=True, slots=True)
class PointSpec:
    """A point a data unit names, before it is looked up or provisioned."""

    key: str
    system_type: int | None = None
    system_address: int | None = None
    component_type: int | None = None
    component_address: int | None = None
    description: str = ""


@dataclass(slots=True)
class Point:
    key: str
    device_id: str
    status: int | None  # last committed status word


class CommitKey(NamedTuple):
    """The stored row a message becomes: ("event", device, ts, name) or ("reading", ...)."""

    kind: str
    device_id: str
    ts: datetime
    name: str


@dataclass(frozen=True, slots=True)
class Canonical:
    topic: str
    payload: bytes
    keys: tuple[CommitKey, ...]


@dataclass(slots=True)
class Translation:
    messages: list[Canonical] = field(default_factory=list)
    # Objects refused one by one (the rest of the frame goes through): reason, detail.
    refusals: list[tuple[RejectReason, str]] = field(default_factory=list)
    # Status words to remember once the messages are committed: (point key, word, ts).
    states: list[tuple[str, int, datetime]] = field(default_factory=list)
    duty_answered: datetime | None = None
    uitd_clock: datetime | None = None


def system_key(system_type: int, system_address: int) -> str:
    return f"s{system_type}-{system_address}"


def component_key(system_type: int, system_address: int, zone: int, position: int) -> str:
    return f"{system_key(system_type, system_address)}.c{zone}-{position}"


def point_specs(unit: DataUnit) -> list[PointSpec]:
    """The points a data unit speaks of ('' is the UITD itself), each once."""
    specs: dict[str, PointSpec] = {}
    for obj in unit.objects:
        if isinstance(obj, SystemStatus | OperationRecord):
            key = system_key(obj.system_type, obj.system_address)
            specs.setdefault(key, PointSpec(key, obj.system_type, obj.system_address))
        elif isinstance(obj, ComponentStatus | ComponentAnalog):
            key = component_key(obj.system_type, obj.system_address, obj.zone, obj.position)
            description = obj.description if isinstance(obj, ComponentStatus) else ""
            spec = PointSpec(
                key,
                obj.system_type,
                obj.system_address,
                obj.component_type,
                obj.component_address,
                description,
            )
            if key not in specs or (description and not specs[key].description):
                specs[key] = spec
        else:
            specs.setdefault("", PointSpec(""))
    return list(specs.values())


def status_events(
    previous: int | None, status: int, bits: dict[int, str], moments: dict[int, str] | None = None
) -> list[str]:
    """Events for the bits that changed; bit 0 (1 = normal, 0 = test) is ``test_mode``."""
    before = NORMAL if previous is None else previous
    events: list[str] = []
    if before & 1 and not status & 1:
        events.append("test_mode")
    elif not before & 1 and status & 1:
        events.append("test_mode_cleared")
    for bit, name in bits.items():
        was, now = before >> bit & 1, status >> bit & 1
        if now and not was:
            events.append(name)
        elif was and not now:
            events.append(f"{name}_cleared")
    for bit, name in (moments or {}).items():
        if status >> bit & 1 and not before >> bit & 1:
            events.append(name)
    return events


class _Builder:
    def __init__(
        self, uitd: Uitd, points: dict[str, Point | None], received_at: datetime, limits: Limits
    ) -> None:
        self.uitd = uitd
        self.points = points
        self.received_at = received_at
        self.limits = limits
        self.out = Translation()
        self._keys: set[CommitKey] = set()
        # Status words seen earlier in this frame count as the previous ones.
        self._status: dict[str, int | None] = {}

    def time(self, label: TimeLabel) -> datetime | None:
        try:
            return label.to_datetime(self.uitd.zone)
        except ValueError as exc:
            self.out.refusals.append((RejectReason.BAD_PAYLOAD, f"time label {label}: {exc}"))
            return None

    def point(self, key: str) -> Point | None:
        point = self.points.get(key)
        if point is None:
            self.out.refusals.append(
                (
                    RejectReason.UNKNOWN_DEVICE,
                    f"point {key or '(the UITD)'} of UITD {self.uitd.device_id} is not registered",
                )
            )
        return point

    def previous(self, point: Point) -> int | None:
        return self._status.get(point.key, point.status)

    def emit(
        self, channel: str, device_id: str, body: dict[str, Any], keys: list[CommitKey]
    ) -> None:
        keys = [k for k in keys if k not in self._keys]
        if not keys:
            return  # the same row twice in one frame: once is enough
        topic = device_topic(self.uitd.community_id, DEVICE_CLASS, device_id, channel)
        payload = orjson.dumps(body)
        try:
            decode(parse_topic(topic), payload, self.received_at, self.limits)
        except RejectedMessage as exc:
            self.out.refusals.append((exc.reason, f"{device_id}: {exc.detail}"))
            return
        self._keys.update(keys)
        self.out.messages.append(Canonical(topic, payload, tuple(keys)))

    def event(self, device_id: str, name: str, ts: datetime, data: dict[str, Any]) -> None:
        body = {"ts": ts.isoformat(), "event": name, "data": data}
        self.emit("event", device_id, body, [CommitKey("event", device_id, ts, name)])

    def status(
        self,
        point: Point,
        word: int,
        ts: datetime,
        bits: dict[int, str],
        moments: dict[int, str] | None,
        data: dict[str, Any],
    ) -> None:
        for name in status_events(self.previous(point), word, bits, moments):
            self.event(point.device_id, name, ts, {**data, "status": word})
        self._status[point.key] = word
        self.out.states.append((point.key, word, ts))


def _system_data(origin: dict[str, Any], obj: SystemStatus | ComponentStatus) -> dict[str, Any]:
    """An event's data: where it came from and the panel system it concerns."""
    return {**origin, "system_type": obj.system_type, "system_address": obj.system_address}


def translate(
    unit: DataUnit,
    uitd: Uitd,
    points: dict[str, Point | None],
    received_at: datetime,
    limits: Limits | None = None,
) -> Translation:
    """Canonical messages for one data unit. ``points`` maps each of ``point_specs``
    to its registered point, or None when it is not registered (a refusal)."""
    b = _Builder(uitd, points, received_at, limits or Limits())
    origin = {"source": "gb26875", "uitd": format_address(uitd.address)}
    for obj in unit.objects:
        if isinstance(obj, ClockSync | DutyCheck):  # downstream types sent upstream
            b.out.refusals.append(
                (RejectReason.BAD_PAYLOAD, f"type {unit.type_flag} is not sent by a UITD")
            )
            continue
        ts = b.time(obj.time)
        if ts is None:
            continue
        if isinstance(obj, SystemStatus):
            point = b.point(system_key(obj.system_type, obj.system_address))
            if point is not None:
                data = _system_data(origin, obj)
                b.status(point, obj.status, ts, SYSTEM_BITS, SYSTEM_MOMENTS, data)
        elif isinstance(obj, ComponentStatus):
            point = b.point(
                component_key(obj.system_type, obj.system_address, obj.zone, obj.position)
            )
            if point is not None:
                data = {
                    **_system_data(origin, obj),
                    "component_type": obj.component_type,
                    "zone": obj.zone,
                    "position": obj.position,
                    "address_raw": obj.component_address,
                    "description": obj.description,
                }
                b.status(point, obj.status, ts, COMPONENT_BITS, None, data)
        elif isinstance(obj, ComponentAnalog):
            point = b.point(
                component_key(obj.system_type, obj.system_address, obj.zone, obj.position)
            )
            kind = ANALOG_TYPES.get(obj.analog_type)
            if kind is None:
                b.out.refusals.append(
                    (
                        RejectReason.UNKNOWN_METRIC,
                        f"analog type {obj.analog_type} is not interpreted",
                    )
                )
            elif point is not None:
                value = round(obj.value * kind.scale, 6)
                key = CommitKey("reading", point.device_id, ts, kind.metric)
                b.emit(
                    "telemetry",
                    point.device_id,
                    {"ts": ts.isoformat(), "metrics": {kind.metric: value}},
                    [key],
                )
        elif isinstance(obj, OperationRecord):
            point = b.point(system_key(obj.system_type, obj.system_address))
            if point is not None:
                data = {**origin, "operator": obj.operator, "flags": obj.flags}
                for bit, name in OPERATION_FLAGS.items():
                    if obj.flags >> bit & 1:
                        b.event(point.device_id, name, ts, data)
        elif isinstance(obj, UitdStatus):
            point = b.point("")
            if point is not None:
                b.status(point, obj.status, ts, UITD_BITS, None, dict(origin))
        elif isinstance(obj, UitdOperation):
            point = b.point("")
            if point is not None:
                data = {**origin, "operator": obj.operator, "flags": obj.flags}
                for bit, name in UITD_OPERATION_FLAGS.items():
                    if obj.flags >> bit & 1:
                        b.event(point.device_id, name, ts, data)
                if obj.flags >> 5 & 1:
                    b.out.duty_answered = ts
        elif isinstance(obj, UitdTime):
            b.out.uitd_clock = ts
    return b.out
