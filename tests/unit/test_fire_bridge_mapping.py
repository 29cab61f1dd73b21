"""Data units to canonical messages: status edges, analog scaling, refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import RejectReason
from core.events import is_known_event
from core.gbt26875 import TimeLabel
from core.gbt26875_units import (
    ComponentAnalog,
    ComponentStatus,
    DataUnit,
    OperationRecord,
    SystemStatus,
    UitdOperation,
    UitdStatus,
    UitdTime,
)
from firebridge.mapping import (
    COMPONENT_BITS,
    OPERATION_FLAGS,
    SYSTEM_BITS,
    SYSTEM_MOMENTS,
    UITD_BITS,
    UITD_OPERATION_FLAGS,
    CommitKey,
    Point,
    Uitd,
    point_specs,
    status_events,
    translate,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
UITD = Uitd("u1", "c1", "b1", bytes(range(6)), False, 60, "active", SHANGHAI)
T = TimeLabel(2, 58, 9, 3, 12, 26)
WHEN = datetime(2026, 12, 3, 9, 58, 2, tzinfo=SHANGHAI)
NOW = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
SMOKE = ComponentStatus(1, 1, 42, 10 | 2 << 16, 0x0003, "lobby", T)


def points(*keys: str) -> dict[str, Point | None]:
    return {k: Point(k, f"dev-{k or 'uitd'}", None) for k in keys}


def test_every_event_the_bridge_can_send_is_in_the_fire_catalogue() -> None:
    names = {"test_mode", "test_mode_cleared"}
    for table in (SYSTEM_BITS, COMPONENT_BITS, UITD_BITS):
        names |= set(table.values()) | {f"{n}_cleared" for n in table.values()}
    names |= set(SYSTEM_MOMENTS.values()) | set(OPERATION_FLAGS.values())
    names |= set(UITD_OPERATION_FLAGS.values())
    names |= {"link_lost", "link_restored", "duty_check_missed", "clock_synced"}
    unknown = sorted(n for n in names if not is_known_event("fire", n))
    assert not unknown


def test_status_edges() -> None:
    assert status_events(None, 0x0003, COMPONENT_BITS) == ["fire_alarm"]
    assert status_events(0x0003, 0x0005, COMPONENT_BITS) == ["fire_alarm_cleared", "fault"]
    assert status_events(0x0005, 0x0005, COMPONENT_BITS) == []
    assert status_events(0x0001, 0x0000, COMPONENT_BITS) == ["test_mode"]
    # Reset is a moment: it has no clearing.
    assert status_events(0x0001, 0x2001, SYSTEM_BITS, SYSTEM_MOMENTS) == ["reset"]
    assert status_events(0x2001, 0x0001, SYSTEM_BITS, SYSTEM_MOMENTS) == []
    # Bit 8 is main power on a system, power on a component.
    assert status_events(None, 0x0101, SYSTEM_BITS) == ["main_power_fault"]
    assert status_events(None, 0x0101, COMPONENT_BITS) == ["power_fault"]


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_status_edges_are_consistent(before: int, after: int) -> None:
    events = status_events(before, after, SYSTEM_BITS, SYSTEM_MOMENTS)
    assert len(events) == len(set(events))
    assert all(is_known_event("fire", e) for e in events)
    assert status_events(after, after, SYSTEM_BITS, SYSTEM_MOMENTS) == []


def test_component_fire_alarm_becomes_an_event_on_its_device() -> None:
    key = "s1-1.c10-2"
    assert [s.key for s in point_specs(DataUnit(2, (SMOKE,)))] == [key]
    out = translate(DataUnit(2, (SMOKE,)), UITD, points(key), NOW)
    assert not out.refusals
    (message,) = out.messages
    assert message.topic == f"community/c1/fire/dev-{key}/event"
    body = orjson.loads(message.payload)
    assert body["event"] == "fire_alarm"
    assert body["data"]["zone"] == 10
    assert body["data"]["position"] == 2
    assert body["data"]["description"] == "lobby"
    assert datetime.fromisoformat(body["ts"]) == WHEN
    assert message.keys == (CommitKey("event", f"dev-{key}", WHEN, "fire_alarm"),)
    assert out.states == [(key, 0x0003, WHEN)]


def test_previous_status_decides_the_edges() -> None:
    key = "s1-1.c10-2"
    known = {key: Point(key, "d", 0x0003)}
    cleared = ComponentStatus(1, 1, 42, 10 | 2 << 16, 0x0001, "lobby", T)
    out = translate(DataUnit(2, (cleared,)), UITD, dict(known), NOW)
    assert [orjson.loads(m.payload)["event"] for m in out.messages] == ["fire_alarm_cleared"]
    # The same word again: nothing new, but its state is still remembered.
    again = translate(DataUnit(2, (SMOKE,)), UITD, dict(known), NOW)
    assert again.messages == []
    assert again.states == [(key, 0x0003, WHEN)]


def test_analog_values_are_scaled_into_catalogue_units() -> None:
    key = "s11-1.c1-7"
    objects = (
        ComponentAnalog(11, 1, 99, 1 | 7 << 16, 4, 3, T),  # 0.3 MPa
        ComponentAnalog(11, 1, 99, 1 | 7 << 16, 3, 215, T),  # 21.5 degC
        ComponentAnalog(11, 1, 99, 1 | 7 << 16, 6, 255, T),  # 25.5 %LEL
    )
    out = translate(DataUnit(3, objects), UITD, points(key), NOW)
    metrics = [orjson.loads(m.payload)["metrics"] for m in out.messages]
    assert metrics == [{"pipe_pressure": 0.3}, {"temperature": 21.5}, {"gas_lel": 25.5}]


def test_refusals_are_per_object() -> None:
    key = "s1-1.c10-2"
    bad_value = ComponentAnalog(1, 1, 99, 10 | 2 << 16, 4, -5, T)  # negative pressure
    unknown_type = ComponentAnalog(1, 1, 99, 10 | 2 << 16, 200, 1, T)
    out = translate(DataUnit(3, (bad_value, unknown_type)), UITD, points(key), NOW)
    assert [r for r, _ in out.refusals] == [RejectReason.OUT_OF_RANGE, RejectReason.UNKNOWN_METRIC]
    unmapped = translate(DataUnit(2, (SMOKE,)), UITD, {"s1-1.c10-2": None}, NOW)
    assert [r for r, _ in unmapped.refusals] == [RejectReason.UNKNOWN_DEVICE]
    impossible = ComponentStatus(1, 1, 42, 10 | 2 << 16, 3, "", TimeLabel(0, 0, 0, 31, 2, 26))
    out = translate(DataUnit(2, (impossible,)), UITD, points(key), NOW)
    assert [r for r, _ in out.refusals] == [RejectReason.BAD_PAYLOAD]


def test_system_uitd_and_operations() -> None:
    unit = DataUnit(1, (SystemStatus(1, 1, 0x0101, T),))
    out = translate(unit, UITD, points("s1-1"), NOW)
    assert [orjson.loads(m.payload)["event"] for m in out.messages] == ["main_power_fault"]
    ops = translate(DataUnit(4, (OperationRecord(1, 1, 0x03, 7, T),)), UITD, points("s1-1"), NOW)
    assert [orjson.loads(m.payload)["event"] for m in ops.messages] == ["reset", "silenced"]
    answer = translate(DataUnit(24, (UitdOperation(0x20, 1, T),)), UITD, points(""), NOW)
    assert [orjson.loads(m.payload)["event"] for m in answer.messages] == ["duty_check_answered"]
    assert answer.duty_answered == WHEN
    link = translate(DataUnit(21, (UitdStatus(0x21, T),)), UITD, points(""), NOW)
    assert [orjson.loads(m.payload)["event"] for m in link.messages] == ["link_fault"]
    clock = translate(DataUnit(28, (UitdTime(T),)), UITD, points(""), NOW)
    assert clock.messages == []
    assert clock.uitd_clock == WHEN


@pytest.mark.parametrize("count", [0, 1])
def test_empty_and_single_units(count: int) -> None:
    unit = DataUnit(2, (SMOKE,) * count)
    out = translate(unit, UITD, points("s1-1.c10-2"), NOW)
    assert len(out.messages) == count
