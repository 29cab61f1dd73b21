"""The gateway's view of the device registry: who may speak, for which community and class.

Read from the database into memory; re-read on a miss (rate limited, so a flood
from an unknown device cannot hammer the database) and periodically, so a
device registered or decommissioned elsewhere is seen within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from core.errors import RejectedMessage, RejectReason
from core.models import DeviceState
from core.topics import DeviceTopic

__all__ = ["DeviceInfo", "Registry", "load_devices"]

# Full re-read period: how long a decommissioning may take to reach the gateway.
FULL_REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    community_id: str
    device_class: str
    state: str


def load_devices(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, DeviceInfo]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT id, community_id, device_class, state FROM devices")
        return {str(r[0]): DeviceInfo(str(r[1]), str(r[2]), str(r[3])) for r in cur}


class Registry:
    def __init__(
        self,
        *,
        loader: Callable[[], dict[str, DeviceInfo]],
        miss_refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._devices: dict[str, DeviceInfo] = {}
        self._loaded_at = float("-inf")

    def refresh(self) -> None:
        self._devices = self._loader()
        self._loaded_at = self._clock()

    def refresh_if_stale(self) -> None:
        if self._clock() - self._loaded_at >= FULL_REFRESH_S:
            self.refresh()

    def lookup(self, device_id: str) -> DeviceInfo | None:
        info = self._devices.get(device_id)
        if info is None and self._clock() - self._loaded_at >= self._miss_refresh_s:
            self.refresh()
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
