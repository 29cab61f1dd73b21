"""The device directory: every registered device, one copy per process.

The gateway checks each message's topic against it (who may speak, for which
community and class); the rule engine reads each device's class, building,
expected interval and time zone from it. It holds no I/O of its own: loaders
read the registry (``store.device_directory``). Changes arrive three ways, cheapest
first: a notification naming the devices that changed (``changed``, fed by
LISTEN/NOTIFY on registry changes), a targeted re-read of devices seen but not
known (rate limited, so a flood from an unknown device cannot hammer the
database), and a full re-read every ``full_refresh_s`` as the safety net for a
notification lost with a connection.

The map is replaced, never changed in place: readers on other threads take
``devices()`` and keep a consistent snapshot; ``version`` says when to take a
new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from core.errors import RejectedMessage, RejectReason
from core.models import DeviceState
from core.topics import DeviceTopic

__all__ = ["FULL_REFRESH_S", "DeviceDirectory", "DeviceInfo"]

# Full re-read period: how late a change may reach us when its notification was lost.
FULL_REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A registered device (registry row plus its community's zone)."""

    device_id: str
    community_id: str
    device_class: str
    expected_interval_s: float
    building: str | None = None
    time_zone: str = "Asia/Shanghai"
    state: str = "active"


LoadAll = Callable[[], dict[str, DeviceInfo]]
LoadSome = Callable[[Collection[str]], dict[str, DeviceInfo]]


class DeviceDirectory:
    def __init__(
        self,
        *,
        load_all: LoadAll,
        load_some: LoadSome | None = None,
        miss_refresh_s: float,
        full_refresh_s: float = FULL_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load_all = load_all
        self._load_some = load_some
        self._miss_refresh_s = miss_refresh_s
        self.full_refresh_s = full_refresh_s
        self._clock = clock
        self._devices: Mapping[str, DeviceInfo] = {}
        self._loaded_at = float("-inf")  # the last full read
        self._missed_at = float("-inf")  # the last read caused by an unknown device
        # Loaders share one connection and writers one map: one at a time.
        self._lock = threading.Lock()
        self.version = 0

    # -- reading ----------------------------------------------------------------

    def devices(self) -> Mapping[str, DeviceInfo]:
        """The current map; never changed once returned."""
        return self._devices

    def get(self, device_id: str) -> DeviceInfo | None:
        return self._devices.get(device_id)

    def lookup(self, device_id: str) -> DeviceInfo | None:
        """As ``get``, reading the registry again for a device not known (rate limited)."""
        info = self._devices.get(device_id)
        if info is None and self.missing([device_id]):
            info = self._devices.get(device_id)
        return info

    def check(self, topic: DeviceTopic) -> DeviceInfo:
        """Refuse a message whose topic names an unknown, decommissioned or mismatched device."""
        info = self.lookup(topic.device_id)
        if info is None:
            raise RejectedMessage(
                RejectReason.UNKNOWN_DEVICE, f"device {topic.device_id!r} is not registered"
            )
        if info.state == DeviceState.DECOMMISSIONED:
            raise RejectedMessage(
                RejectReason.DEVICE_DECOMMISSIONED, f"device {topic.device_id!r} is decommissioned"
            )
        if info.device_class != topic.device_class:
            raise RejectedMessage(
                RejectReason.CLASS_MISMATCH,
                f"device {topic.device_id!r} is {info.device_class!r}, topic says "
                f"{topic.device_class!r}",
            )
        if info.community_id != topic.community_id:
            raise RejectedMessage(
                RejectReason.COMMUNITY_MISMATCH,
                f"device {topic.device_id!r} belongs to {info.community_id!r}, topic says "
                f"{topic.community_id!r}",
            )
        return info

    # -- refreshing ---------------------------------------------------------------

    def refresh(self) -> None:
        """Read every device again (``ServiceUnavailable`` if the database cannot say)."""
        with self._lock:
            self._set(self._load_all())
            self._loaded_at = self._clock()

    def refresh_if_stale(self) -> None:
        if self._clock() - self._loaded_at >= self.full_refresh_s:
            self.refresh()

    def missing(self, device_ids: Collection[str]) -> bool:
        """Devices seen but not known: read them (all devices without a targeted loader),
        at most every ``miss_refresh_s``; True when the registry was read."""
        now = self._clock()
        if now - max(self._missed_at, self._loaded_at) < self._miss_refresh_s:
            return False
        self._missed_at = now
        if self._load_some is None:
            self.refresh()
        else:
            self.changed(device_ids)
        return True

    def changed(self, device_ids: Collection[str]) -> None:
        """These devices were registered, changed or deleted: read just them."""
        if self._load_some is None:
            self.refresh()
            return
        with self._lock:
            found = self._load_some(device_ids)
            devices = dict(self._devices)
            for device_id in device_ids:
                info = found.get(device_id)
                if info is None:
                    devices.pop(device_id, None)
                else:
                    devices[device_id] = info
            self._set(devices)

    def _set(self, devices: Mapping[str, DeviceInfo]) -> None:
        if devices != self._devices:
            self._devices = devices
            self.version += 1
