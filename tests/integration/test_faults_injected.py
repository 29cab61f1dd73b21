"""Every fault the generator makes, through the real broker and pipeline, ends as it must:
a dead letter with the right reason, or stored (once, late, skewed, replayed)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
import pytest

from core.models import Device
from core.topics import device_topic, parse_topic
from simulators.connection import BrokerAddress, Will
from simulators.faults import FAULT_KINDS, Fault, FaultKind, build_fault
from simulators.fleet import OFFLINE
from simulators.injector import drop_connection, inject_faults
from tests.integration.support import Publisher, pipeline_thread, register, telemetry, wait_for
from tests.integration.test_simulate_publish import clear_retained

pytestmark = pytest.mark.integration

CLASSES = ("wearable", "fire", "access", "locker")
SETTLE_S = 30.0


def fault_devices(community: str) -> dict[FaultKind, Device]:
    """A registered device per fault kind, the classes taken in turn."""
    return {
        kind: Device(
            id=f"{community}-{index:02d}",
            community_id=community,
            device_class=CLASSES[index % len(CLASSES)],
            expected_interval_s=300,
        )
        for index, kind in enumerate(FAULT_KINDS)
    }


def dead_letters(url: str, community: str) -> dict[str, list[str]]:
    """Reasons by the device id in the topic."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT topic, reason FROM dead_letters WHERE topic LIKE %s ORDER BY id",
            (f"community/{community}/%",),
        ).fetchall()
    found: dict[str, list[str]] = {}
    for topic, reason in rows:
        found.setdefault(str(topic).split("/")[3], []).append(str(reason))
    return found


def stored_times(url: str, device_id: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT ts) FROM readings WHERE device_id = %s", (device_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def device_row(url: str, device_id: str) -> tuple[bool | None, datetime | None]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT online, last_seen FROM devices WHERE id = %s", (device_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def outcome_reached(url: str, community: str, faults: list[Fault]) -> bool:
    letters = dead_letters(url, community)
    for fault in faults:
        if len(letters.get(fault.device_id, [])) < fault.dead_letters:
            return False
        if fault.stored and stored_times(url, fault.device_id) < fault.stored:
            return False
    return True


def test_each_fault_is_dead_lettered_or_stored_as_the_contract_says(
    database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community = unique_id
    devices = fault_devices(community)
    with_will = Device(id=f"{community}-will", community_id=community, device_class="wearable")
    marker = f"{community}-marker"  # speaks last: once it is stored, everything before is
    for device_class in CLASSES:
        ids = [d.id for d in devices.values() if d.device_class == device_class]
        if device_class == "wearable":
            ids += [with_will.id, marker]
        register(database_url, community, ids, device_class)
    now = datetime.now(UTC)
    faults = [build_fault(kind, device=devices[kind], now=now, seed=1) for kind in FAULT_KINDS]
    assert {f.kind for f in faults} == set(FaultKind)

    with pipeline_thread(database_url, mqtt_url, f"{unique_id}-pipe", community):
        report = inject_faults(faults, mqtt_url=mqtt_url, client_id=f"{unique_id}-faults")
        # The control for disconnect_no_will: the same drop, with a Will.
        control = build_fault(FaultKind.DISCONNECT_NO_WILL, device=with_will, now=now)
        will = Will(topic=control.messages[0].topic, payload=OFFLINE)
        drop_connection(BrokerAddress.parse(mqtt_url), control, "auto", will=will)
        wait_for(lambda: outcome_reached(database_url, community, faults), SETTLE_S, "faults")
        wait_for(lambda: device_row(database_url, with_will.id)[0] is False, SETTLE_S, "the Will")
        # A duplicate stored twice would be committed before a message published after it.
        publisher = Publisher(mqtt_url, f"{unique_id}-marker")
        try:
            publisher.publish(
                device_topic(community, "wearable", marker, "telemetry"),
                telemetry(0, int(time.time() * 1000)),
            )
            publisher.flush()
        finally:
            publisher.close()
        wait_for(lambda: stored_times(database_url, marker) == 1, SETTLE_S, "the marker")

    assert report.messages == sum(len(f.messages) for f in faults)
    assert report.connections_dropped == 1
    letters = dead_letters(database_url, community)
    for fault in faults:
        got = letters.get(fault.device_id, [])
        if fault.reason is not None:
            assert got == [fault.reason.value] * len(fault.messages), fault.kind
        else:
            assert got == [], fault.kind
            assert stored_times(database_url, fault.device_id) == fault.stored, fault.kind
    # Every dead letter is one of ours: nothing else in the community was refused.
    assert sum(map(len, letters.values())) == sum(f.dead_letters for f in faults)

    late = next(f for f in faults if f.kind is FaultKind.LATE)
    _, last_seen = device_row(database_url, late.device_id)
    assert last_seen is not None
    assert abs((last_seen - now).total_seconds()) < 1, "a late reading moved last_seen back"

    dropped = next(f for f in faults if f.kind is FaultKind.DISCONNECT_NO_WILL)
    online, _ = device_row(database_url, dropped.device_id)
    assert online is True, "no Will: the retained status must still say online"
    assert parse_topic(dropped.messages[0].topic).channel == "status"
    clear_retained(mqtt_url, [dropped.messages[0].topic, control.messages[0].topic])
