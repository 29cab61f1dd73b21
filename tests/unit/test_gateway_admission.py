"""The gateway's admission of a message: the device registry check and the resend window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.directory import DeviceDirectory, DeviceInfo
from core.errors import RejectedMessage, RejectReason
from core.topics import parse_topic
from gateway.dedupe import RESEND_SPAN, SeqWindow

T0 = datetime(2026, 11, 29, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_registry(
    devices: dict[str, DeviceInfo], clock: Clock
) -> tuple[DeviceDirectory, list[int]]:
    loads: list[int] = []

    def loader() -> dict[str, DeviceInfo]:
        loads.append(1)
        return dict(devices)

    return DeviceDirectory(load_all=loader, miss_refresh_s=1.0, clock=clock), loads


def device(community: str, device_class: str, state: str) -> DeviceInfo:
    return DeviceInfo("-", community, device_class, 300.0, state=state)


def test_known_device_passes_and_mismatches_are_refused() -> None:
    devices = {
        "w1": device("c1", "wearable", "active"),
        "old": device("c1", "fire", "decommissioned"),
        "m1": device("c1", "locker", "maintenance"),
    }
    registry, _ = make_registry(devices, Clock())
    assert registry.check(parse_topic("community/c1/wearable/w1/telemetry")).state == "active"
    # Maintenance devices still report; their alerts are what is suppressed.
    assert registry.check(parse_topic("community/c1/locker/m1/telemetry")).state == "maintenance"
    cases = {
        "community/c1/fire/w1/telemetry": RejectReason.CLASS_MISMATCH,
        "community/c2/wearable/w1/telemetry": RejectReason.COMMUNITY_MISMATCH,
        "community/c1/fire/old/telemetry": RejectReason.DEVICE_DECOMMISSIONED,
        "community/c1/fire/nobody/telemetry": RejectReason.UNKNOWN_DEVICE,
    }
    for topic, reason in cases.items():
        with pytest.raises(RejectedMessage) as info:
            registry.check(parse_topic(topic))
        assert info.value.reason is reason, topic


def test_a_miss_rereads_the_registry_at_most_once_per_interval() -> None:
    devices: dict[str, DeviceInfo] = {}
    clock = Clock()
    registry, loads = make_registry(devices, clock)
    for _ in range(100):
        assert registry.lookup("new") is None
    assert len(loads) == 1
    devices["new"] = device("c1", "fire", "active")
    assert registry.lookup("new") is None  # same instant: no re-read
    clock.now = 1.0
    assert registry.lookup("new") == device("c1", "fire", "active")
    assert len(loads) == 2


def test_seq_window() -> None:
    window = SeqWindow(capacity=3)
    assert not window.is_duplicate("d", 1, T0)
    assert window.is_duplicate("d", 1, T0)  # redelivered
    assert window.is_duplicate("d", 1, T0 + timedelta(seconds=2))  # re-stamped resend
    assert not window.is_duplicate("e", 1, T0)  # other device
    # A seq reused long after is a counter reset, not a resend.
    assert not window.is_duplicate("d", 1, T0 + RESEND_SPAN + timedelta(seconds=1))
    assert not window.is_duplicate("d", None, T0)
    assert not window.is_duplicate("d", None, T0)  # no seq: the database key decides
    for seq in (2, 3, 4):
        window.is_duplicate("d", seq, T0)
    assert not window.is_duplicate("e", 1, T0)  # evicted by capacity
