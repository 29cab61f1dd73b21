"""A community's fleet at a glance: devices by state and connectivity, weak batteries and
signals, and the devices that need someone, worst first.

Pure: the caller reads the devices (``store.devices``) and passes ``now``; the API and
the CLI show the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.connectivity import Connectivity, Presence, judge, low_battery, weak_signal
from core.models import DeviceState
from core.projection import project

__all__ = ["DeviceHealth", "FleetDevice", "FleetStatus", "presence_of", "summarize_fleet"]

# Worst first: a device that stopped talking before one that is merely weak.
_SEVERITY = {
    Connectivity.OFFLINE: 0,
    Connectivity.SILENT: 1,
    Connectivity.NEVER_SEEN: 2,
    Connectivity.ONLINE: 3,
    Connectivity.RETIRED: 4,
}


class FleetDevice(Protocol):
    """What the fleet view reads of a device (``store.devices.DeviceRecord`` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def device_class(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def expected_interval_s(self) -> int: ...
    @property
    def last_received_at(self) -> datetime | None: ...
    @property
    def online(self) -> bool | None: ...
    @property
    def status_at(self) -> datetime | None: ...
    @property
    def battery(self) -> float | None: ...
    @property
    def rssi(self) -> float | None: ...
    @property
    def building(self) -> str | None: ...
    @property
    def unit(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    id: str
    device_class: str
    state: DeviceState
    connectivity: Connectivity
    battery: float | None
    rssi: float | None
    last_received_at: datetime | None
    building: str | None
    unit: str | None
    problems: list[str]  # offline, silent, never_seen, low_battery, weak_signal


@dataclass(frozen=True, slots=True)
class FleetStatus:
    community_id: str
    at: datetime
    devices: int
    by_state: dict[str, int]
    by_connectivity: dict[str, int]
    low_battery: int
    weak_signal: int
    attention: list[DeviceHealth]  # active devices with a problem, worst first


def presence_of(device: FleetDevice) -> Presence:
    return project(Presence, device)


def summarize_fleet(
    community_id: str, devices: Sequence[FleetDevice], now: datetime, limit: int
) -> FleetStatus:
    """Counts by state and connectivity, and at most ``limit`` devices needing attention."""
    by_state: Counter[str] = Counter()
    by_connectivity: Counter[str] = Counter()
    attention: list[tuple[int, str, DeviceHealth]] = []
    batteries = signals = 0
    for device in devices:
        connectivity = judge(presence_of(device), now)
        by_state[device.state] += 1
        by_connectivity[connectivity.value] += 1
        problems = [connectivity.value] if connectivity is not Connectivity.ONLINE else []
        if low_battery(device.battery):
            batteries += 1
            problems.append("low_battery")
        if weak_signal(device.rssi):
            signals += 1
            problems.append("weak_signal")
        if problems and device.state == DeviceState.ACTIVE:
            health = project(
                DeviceHealth,
                device,
                state=DeviceState(device.state),
                connectivity=connectivity,
                problems=problems,
            )
            attention.append((_SEVERITY[connectivity], device.id, health))
    attention.sort(key=lambda item: item[:2])
    return FleetStatus(
        community_id=community_id,
        at=now,
        devices=len(devices),
        by_state=dict(sorted(by_state.items())),
        by_connectivity={
            c.value: by_connectivity[c.value] for c in Connectivity if c is not Connectivity.RETIRED
        },
        low_battery=batteries,
        weak_signal=signals,
        attention=[health for *_, health in attention[:limit]],
    )
