"""What the engine reads and what it says: observations in, alert changes out.

Times are float epoch seconds inside the engine (cheap to compare, and what
numpy vectorises); datetimes exist only at its edges.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from core.directory import DeviceInfo
from core.models import DeviceEvent, Reading
from core.rules import Rule, Severity

__all__ = [
    "AlertChange",
    "ChangeKind",
    "DeviceInfo",
    "Directory",
    "EvaluationFailure",
    "EventObs",
    "Observations",
    "ReadingColumns",
    "building_subject",
    "community_subject",
    "device_subject",
    "observations",
]

FloatArray = npt.NDArray[np.float64]


Directory = Mapping[str, DeviceInfo]


def device_subject(device_id: str) -> str:
    return f"device:{device_id}"


def building_subject(community_id: str, building: str) -> str:
    return f"building:{community_id}/{building}"


def community_subject(community_id: str) -> str:
    return f"community:{community_id}"


@dataclass(slots=True)
class ReadingColumns:
    """Readings of one (device class, metric) in a batch, column-wise."""

    device_ids: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    # The message each row came from (its index in the evaluated batch).
    sources: list[int] = field(default_factory=list)
    _ts: FloatArray | None = None
    _values: FloatArray | None = None
    _devices: set[str] | None = None

    def ts_array(self) -> FloatArray:
        if self._ts is None:
            self._ts = np.asarray(self.ts, dtype=np.float64)
        return self._ts

    def value_array(self) -> FloatArray:
        if self._values is None:
            self._values = np.asarray(self.values, dtype=np.float64)
        return self._values

    def devices(self) -> set[str]:
        """The devices with rows in this group, built once per group and only when asked."""
        if self._devices is None:
            self._devices = set(self.device_ids)
        return self._devices

    def rows_of(self, devices: Container[str]) -> dict[str, list[int]]:
        """Row indices of each of ``devices`` that has rows here. A rule steps through
        the few devices that breach or are pending, not the whole batch's thousands."""
        rows: dict[str, list[int]] = {}
        for i in [i for i, device in enumerate(self.device_ids) if device in devices]:
            device = self.device_ids[i]
            found = rows.get(device)
            if found is None:
                rows[device] = [i]
            else:
                found.append(i)
        return rows

    def by_source(self) -> list[tuple[int, ReadingColumns]]:
        """The rows of each message on their own, in batch order (to isolate a failure)."""
        parts: dict[int, ReadingColumns] = {}
        for i, source in enumerate(self.sources):
            part = parts.get(source)
            if part is None:
                part = parts[source] = ReadingColumns()
            part.device_ids.append(self.device_ids[i])
            part.ts.append(self.ts[i])
            part.values.append(self.values[i])
            part.sources.append(source)
        return list(parts.items())


@dataclass(frozen=True, slots=True)
class EventObs:
    device: DeviceInfo
    event: str
    ts: float
    data: Mapping[str, Any]
    source: int = -1  # the message's index in the evaluated batch


@dataclass(frozen=True, slots=True)
class EvaluationFailure:
    """A rule (or the arranging of the batch, ``rule_id`` empty) raised on one message."""

    source: int  # the message's index in the evaluated batch; -1 when unknown
    rule_id: str
    error: Exception


@dataclass(slots=True)
class Observations:
    """One committed batch, arranged for the engine."""

    readings: dict[tuple[str, str], ReadingColumns] = field(default_factory=dict)
    events: list[EventObs] = field(default_factory=list)
    # Newest sign of life per device (telemetry or event; never a retained status).
    seen: dict[str, float] = field(default_factory=dict)
    # Devices not in the directory (registered since it was loaded).
    unknown: set[str] = field(default_factory=set)
    # How far each device's clock ran ahead of receipt (s, worst in the batch; may be < 0).
    ahead: dict[str, float] = field(default_factory=dict)
    # The last status per device in the batch (broker order): (online, received at).
    links: dict[str, tuple[bool, float]] = field(default_factory=dict)
    # The last message of each known device in the batch (a failure keyed by device
    # is laid at its door), and what raised while the engine evaluated the batch.
    sources: dict[str, int] = field(default_factory=dict)
    failures: list[EvaluationFailure] = field(default_factory=list)


def _event_time(ts: datetime, received_at: datetime) -> float:
    # A device clock ahead of ours must not push timers into the future.
    return min(ts.timestamp(), received_at.timestamp())


def observations(
    items: Iterable[tuple[str, list[Reading], DeviceEvent | None]],
    directory: Directory,
    metrics: Container[str] | None = None,
) -> Observations:
    """Arrange (device id, readings, event) triples for ``Engine.evaluate``.

    ``metrics``: the ones any rule reads (others are skipped). This runs for every
    message of the stream, so it avoids per-reading work: readings of one message
    share their timestamps, converted once.
    """
    obs = Observations()
    groups = obs.readings
    # The groups of each device class by metric: no (class, metric) key per reading.
    by_class: dict[str, dict[str, ReadingColumns]] = {}
    seen = obs.seen
    ahead = obs.ahead
    sources = obs.sources
    for source, (device_id, readings, event) in enumerate(items):
        info = directory.get(device_id)
        if info is None:
            obs.unknown.add(device_id)
            continue
        sources[device_id] = source
        newest = seen.get(device_id, 0.0)
        cls = info.device_class
        class_groups = by_class.get(cls)
        if class_groups is None:
            class_groups = by_class[cls] = {}
        stamp: datetime | None = None
        received: datetime | None = None
        t = 0.0
        for r in readings:
            if r.ts is not stamp or r.received_at is not received:
                stamp, received = r.ts, r.received_at
                device_s, received_s = stamp.timestamp(), received.timestamp()
                # A device clock ahead of ours must not push timers into the future.
                t = device_s if device_s < received_s else received_s
                offset = device_s - received_s
                if offset > ahead.get(device_id, -math.inf):
                    ahead[device_id] = offset
                if t > newest:
                    newest = t
            metric = r.metric
            group = class_groups.get(metric)
            if group is None:
                if metrics is not None and metric not in metrics:
                    continue
                group = class_groups[metric] = groups[cls, metric] = ReadingColumns()
            group.device_ids.append(device_id)
            group.ts.append(t)
            group.values.append(r.value)
            group.sources.append(source)
        if event is not None:
            t = _event_time(event.ts, event.received_at)
            offset = (event.ts - event.received_at).total_seconds()
            if offset > ahead.get(device_id, -math.inf):
                ahead[device_id] = offset
            obs.events.append(EventObs(info, event.event, t, event.data, source))
            if t > newest:
                newest = t
        if newest:
            seen[device_id] = newest
    return obs


class ChangeKind(StrEnum):
    RAISE = "raise"  # open, or count an occurrence of the open one; may raise severity
    CLEAR = "clear"  # the condition ended (auto-resolve when the rule says so)


@dataclass(frozen=True, slots=True)
class AlertChange:
    kind: ChangeKind
    rule: Rule
    subject: str
    community_id: str
    at: float
    severity: Severity
    title: str
    device_id: str | None = None
    building: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # Raises of one active alert folded into one change (alerts.store.coalesce).
    occurrences: int = 1

    @property
    def rule_id(self) -> str:
        return self.rule.id
