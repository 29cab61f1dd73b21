"""The fault generator without a broker: each kind breaks exactly what it says it breaks.

The gateway's own pure functions (topic parsing and payload decoding) judge the
messages; what needs the registry (unknown device, wrong class) is checked
against the device the fault was built for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.decode import Decoded, decode
from core.errors import RejectedMessage, RejectReason
from core.models import Device
from core.topics import Channel, DeviceTopic, parse_topic
from gateway.dedupe import SeqWindow
from simulators.community import demo_devices
from simulators.connection import BrokerAddress
from simulators.credentials import address_for, load_credentials
from simulators.faults import FAULT_KINDS, Fault, FaultKind, build_fault

NOW = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)
ROSTER = demo_devices(community_id="unit", count=8, seed=4)
ONE_PER_CLASS = list({d.device_class: d for d in ROSTER}.values())


def _registry_check(topic: DeviceTopic, device: Device) -> None:
    if topic.device_id != device.id:
        raise RejectedMessage(RejectReason.UNKNOWN_DEVICE, topic.device_id)
    if topic.device_class != device.device_class:
        raise RejectedMessage(RejectReason.CLASS_MISMATCH, topic.device_class)


def judge(
    fault: Fault, device: Device, received_at: datetime
) -> list[RejectReason | Decoded | None]:
    """What the gateway makes of each message: a reason, or the decoded content
    (None for a resend its sequence window drops)."""
    window = SeqWindow()
    outcomes: list[RejectReason | Decoded | None] = []
    for message in fault.messages:
        try:
            topic = parse_topic(message.topic)
            _registry_check(topic, device)
            decoded = decode(topic, message.payload, received_at)
            time = decoded.device_time
            resend = time is not None and window.is_duplicate(device.id, decoded.seq, time)
            outcomes.append(None if resend else decoded)
        except RejectedMessage as exc:
            outcomes.append(exc.reason)
    return outcomes


@pytest.mark.parametrize("device", ONE_PER_CLASS, ids=lambda d: d.device_class)
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_breaks_what_it_says(kind: FaultKind, device: Device) -> None:
    fault = build_fault(kind, device=device, now=NOW, seed=3)
    assert fault.kind is kind
    assert fault.messages
    assert fault.description
    outcomes = judge(fault, device, NOW)
    if fault.reason is not None:
        assert outcomes == [fault.reason] * len(fault.messages)
        assert fault.dead_letters == len(fault.messages)
        assert fault.stored == 0
        return
    assert not any(isinstance(o, RejectReason) for o in outcomes), outcomes
    decoded = [o for o in outcomes if isinstance(o, Decoded)]
    times = {r.ts for d in decoded for r in d.readings}
    assert len(times) == fault.stored
    assert fault.dead_letters == 0


def test_stored_faults_look_the_way_their_names_say() -> None:
    device = ROSTER[0]

    def times_of(kind: FaultKind) -> list[datetime]:
        fault = build_fault(kind, device=device, now=NOW)
        return [
            min(r.ts for r in decode(parse_topic(m.topic), m.payload, NOW).readings)
            for m in fault.messages
            if parse_topic(m.topic).channel is Channel.TELEMETRY
        ]

    skews = sorted(t - NOW for t in times_of(FaultKind.CLOCK_SKEW))
    assert skews[0] <= -timedelta(hours=1)
    assert skews[-1] >= timedelta(hours=1)
    assert any(timedelta(0) < abs(s) < timedelta(hours=1) for s in skews)
    shuffled = times_of(FaultKind.OUT_OF_ORDER)
    assert shuffled != sorted(shuffled)
    late = times_of(FaultKind.LATE)
    assert late[0] == NOW
    assert late[1] <= NOW - timedelta(hours=1)
    burst = times_of(FaultKind.BURST)
    assert burst == sorted(burst)
    assert burst[-1] - burst[0] >= timedelta(minutes=55)
    assert len(burst) >= 6
    duplicate = build_fault(FaultKind.DUPLICATE, device=device, now=NOW)
    payloads = [m.payload for m in duplicate.messages]
    assert len(set(payloads)) < len(payloads)  # some are byte-for-byte resends


def test_connection_fault_and_unknown_device() -> None:
    device = ROSTER[0]
    dropped = build_fault(FaultKind.DISCONNECT_NO_WILL, device=device, now=NOW)
    assert dropped.drop_connection
    status = dropped.messages[0]
    assert status.retain
    assert parse_topic(status.topic).channel is Channel.STATUS
    ghost = build_fault(FaultKind.UNKNOWN_DEVICE, device=device, now=NOW)
    assert ghost.device_id != device.id
    assert parse_topic(ghost.messages[0].topic).device_id == ghost.device_id


def test_faults_are_deterministic_and_refuse_naive_times() -> None:
    device = ROSTER[1]
    for kind in FAULT_KINDS:
        first = build_fault(kind, device=device, now=NOW, seed=5, seq_start=10)
        assert first == build_fault(kind, device=device, now=NOW, seed=5, seq_start=10)
    with pytest.raises(ValueError, match="timezone-aware"):
        build_fault(FaultKind.NAN, device=device, now=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError):
        build_fault("no_such_fault", device=device, now=NOW)


def test_per_device_credentials(tmp_path: Path) -> None:
    path = tmp_path / "credentials.csv"
    path.write_text("device_id,username,password\nd-1,,s3cret\nd-2,installer-2,pw\n")
    creds = load_credentials(path)
    base = BrokerAddress.parse("mqtt://svc:svcpw@broker:1883")
    assert address_for(base, "d-1", creds).username == "d-1"
    assert address_for(base, "d-1", creds).password == "s3cret"
    assert address_for(base, "d-2", creds).username == "installer-2"
    assert address_for(base, "d-3", creds) == base
    assert "s3cret" not in repr(creds)
    path.write_text("device_id,username,password\nd-1,,\n")
    with pytest.raises(ValueError, match="required"):
        load_credentials(path)
    path.write_text("id,secret\nd-1,x\n")
    with pytest.raises(ValueError, match="columns"):
        load_credentials(path)
