"""Device credentials on a real Mosquitto: the files ``broker export`` writes, enforced.

Each test registers devices (their passwords issued by the registry), exports the
password and ACL files, starts a Mosquitto of its own with them on a free port,
and talks MQTT 5 to it: what the broker allows, refuses, and stops allowing after
a decommissioning or a rotation and the next export.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from core.broker_acl import ServiceRole, command_topic
from core.passwords import hash_password, new_secret
from core.registry import DeviceSpec
from core.topics import alert_topic, device_topic
from smartcommunity.broker_export import add_account, export_broker_files
from smartcommunity.secured_broker import SecuredMosquitto
from store import schema
from store.devices import decommission, register_device, rotate_credentials
from tests.integration.support import count, pipeline_thread, wait_for

pytestmark = pytest.mark.integration

# Reason codes below 0x80 are successes (0x10: accepted, nobody subscribed).
FAILURE = 0x80
NOT_AUTHORIZED = 0x87
BAD_CREDENTIALS = 0x86
TIMEOUT_S = 10.0


@dataclass
class Rig:
    database_url: str
    community: str
    passwords: dict[str, str]
    pipeline_user: str
    pipeline_password: str
    broker: SecuredMosquitto
    files: tuple[Path, Path]

    def export(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            export_broker_files(conn, *self.files)
        self.broker.reload()

    def url(self, user: str, password: str | None = None) -> tuple[str, int, str, str]:
        """Devices use the devices' listener (client id bound to user name), services
        the loopback one, as in deploy/mosquitto/mosquitto.conf."""
        secret = self.passwords[user] if password is None else password
        port = self.broker.port if user == self.pipeline_user else self.broker.device_port
        return ("127.0.0.1", port, user, secret)


@dataclass
class Client:
    """A paho MQTT 5 client that records what the broker answered."""

    client: mqtt.Client
    connack: int = -1
    connected: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    acks: dict[int, int] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)
    subacks: list[list[int]] = field(default_factory=list)
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes) -> int:
        """The PUBACK reason code (QoS 1), with every success as 0."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, TIMEOUT_S), "no PUBACK"
            code = self.acks[info.mid]
            return code if code >= FAILURE else 0

    def subscribe(self, topic: str) -> int:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: len(self.subacks) > before, TIMEOUT_S), "no SUBACK"
            return self.subacks[-1][0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    rig: Rig, user: str, password: str | None = None, client_id: str = "", port: int = 0
) -> Client:
    host, device_port, username, secret = rig.url(user, password)
    port = port or device_port
    paho = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or user, protocol=mqtt.MQTTv5
    )
    paho.username_pw_set(username, secret)
    result = Client(paho)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        result.connack = reason.value
        result.connected.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, _reason: ReasonCode, _p: Any) -> None:
        result.disconnected.set()
        result.connected.set()

    def on_publish(_c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with result.acked:
            result.acks[mid] = reason.value
            result.acked.notify_all()

    def on_subscribe(_c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with result.acked:
            result.subacks.append([r.value for r in reasons])
            result.acked.notify_all()

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        result.messages.append((message.topic, bytes(message.payload)))

    paho.on_connect = on_connect
    paho.on_disconnect = on_disconnect
    paho.on_publish = on_publish
    paho.on_subscribe = on_subscribe
    paho.on_message = on_message
    paho.reconnect_delay_set(30, 60)  # a refused client must not hammer the broker
    paho.connect(host, port)
    paho.loop_start()
    assert result.connected.wait(TIMEOUT_S), "no CONNACK"
    return result


def telemetry(seq: int) -> bytes:
    return orjson.dumps({"ts": 1_767_225_600_000 + seq, "seq": seq, "metrics": {"battery": 80}})


@pytest.fixture
def rig(database_url: str, tmp_path: Path, unique_id: str) -> Iterator[Rig]:
    schema.upgrade(database_url)
    community = f"c{unique_id}"
    passwords: dict[str, str] = {}
    pipeline_user, pipeline_password = f"pipe-{unique_id}", new_secret()
    files = (tmp_path / "passwd", tmp_path / "acl")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (community, "Test"))
        for n, device_class in enumerate(("wearable", "wearable", "fire")):
            spec = DeviceSpec(
                id=f"{unique_id}-d{n}", community_id=community, device_class=device_class
            )
            outcome = register_device(conn, spec, visible=lambda _c: True, installed_by="test")
            assert isinstance(outcome, tuple), outcome
            passwords[spec.id] = outcome[1]
        add_account(conn, pipeline_user, ServiceRole.PIPELINE, hash_password(pipeline_password))
        export_broker_files(conn, *files)
    passwords[pipeline_user] = pipeline_password
    with SecuredMosquitto(
        data_dir=tmp_path / "broker", password_file=files[0], acl_file=files[1]
    ) as broker:
        yield Rig(
            database_url, community, passwords, pipeline_user, pipeline_password, broker, files
        )


def _devices(rig: Rig) -> list[str]:
    return sorted(d for d in rig.passwords if d != rig.pipeline_user)


def test_the_files_hold_hashes_and_one_stanza_per_device(rig: Rig) -> None:
    passwd = rig.files[0].read_text()
    for device, password in rig.passwords.items():
        assert f"\n{device}:$7$101$" in "\n" + passwd
        assert password not in passwd
    acl = rig.files[1].read_text()
    first = _devices(rig)[0]
    assert f"user {first}\ntopic write community/{rig.community}/wearable/{first}/#\n" in acl
    assert rig.files[0].stat().st_mode & 0o777 == 0o640


def _readings(rig: Rig, device: str) -> int:
    return count(rig.database_url, f"SELECT count(*) FROM readings WHERE device_id = '{device}'")


def test_own_topic_is_stored_other_topics_are_refused(rig: Rig, unique_id: str) -> None:
    mine, other, fire = _devices(rig)  # d0, d1: wearables; d2: fire
    pipeline_url = rig.broker.url_for(rig.pipeline_user, rig.pipeline_password)
    with pipeline_thread(rig.database_url, pipeline_url, f"pipe-{unique_id}", rig.community):
        device = connect(rig, mine)
        try:
            assert device.connack == 0
            own = device_topic(rig.community, "wearable", mine, "telemetry")
            assert device.publish(own, telemetry(1)) == 0
            wait_for(lambda: _readings(rig, mine) == 1, TIMEOUT_S, "the device's own reading")
            # Another device's topic, another class, another community, the alerts: refused.
            for topic in (
                device_topic(rig.community, "wearable", other, "telemetry"),
                device_topic(rig.community, "fire", mine, "telemetry"),
                device_topic(f"x{rig.community}", "wearable", mine, "telemetry"),
                alert_topic(rig.community, "critical"),
            ):
                assert device.publish(topic, telemetry(2)) == NOT_AUTHORIZED, topic
            # It may subscribe to its command topic; Mosquitto grants wider subscriptions
            # but delivers only what the ACL lets it read: nothing of its neighbours.
            assert device.subscribe(command_topic(rig.community, "wearable", mine)) == 1
            device.subscribe("community/#")
            neighbour = connect(rig, other)
            try:
                theirs = device_topic(rig.community, "wearable", other, "telemetry")
                assert neighbour.publish(theirs, telemetry(3)) == 0
                wait_for(lambda: _readings(rig, other) == 1, TIMEOUT_S, "the neighbour's reading")
            finally:
                neighbour.close()
            assert device.messages == [], "a device read another device's topic"
        finally:
            device.close()
    assert _readings(rig, fire) == 0
    stray = count(
        rig.database_url,
        f"SELECT count(*) FROM dead_letters WHERE topic LIKE 'community/%/{mine}/%'"
        f" OR topic LIKE 'community/%/{other}/%'",
    )
    assert stray == 0, "a refused message reached the pipeline"


def test_a_device_cannot_take_another_devices_client_id(rig: Rig) -> None:
    """The exported configuration binds a device's client id to its user name: a device
    connecting with a neighbour's client id is itself, and the neighbour stays online."""
    mine, other, _fire = _devices(rig)
    theirs = device_topic(rig.community, "wearable", other, "telemetry")
    victim = connect(rig, other)
    try:
        attacker = connect(rig, mine, client_id=other)
        try:
            assert attacker.connack == 0  # connected, as itself
            assert attacker.publish(theirs, telemetry(1)) == NOT_AUTHORIZED
            # A PUBACK after the attacker's CONNACK: the broker still holds the victim.
            assert victim.publish(theirs, telemetry(2)) == 0
            assert not victim.disconnected.is_set()
        finally:
            attacker.close()
    finally:
        victim.close()


def test_without_the_binding_the_same_takeover_works(rig: Rig) -> None:
    """The control: on the services' listener (ids not bound) the same CONNECT does
    disconnect the victim, so the test above would see a takeover."""
    mine, other, _fire = _devices(rig)
    victim = connect(rig, other, port=rig.broker.port)
    try:
        attacker = connect(rig, mine, client_id=other, port=rig.broker.port)
        try:
            assert attacker.connack == 0
            assert victim.disconnected.wait(TIMEOUT_S), "the takeover did not happen"
        finally:
            attacker.close()
    finally:
        victim.close()


def test_the_pipeline_account_reads_devices_and_writes_alerts(rig: Rig) -> None:
    pipeline = connect(rig, rig.pipeline_user, client_id=f"{rig.pipeline_user}-x")
    device = connect(rig, _devices(rig)[0])
    try:
        assert pipeline.subscribe("community/+/+/+/+") == 1
        assert pipeline.publish(alert_topic(rig.community, "critical"), b"{}") == 0
        # ...but it does not speak for a device.
        topic = device_topic(rig.community, "wearable", _devices(rig)[0], "telemetry")
        assert pipeline.publish(topic, telemetry(3)) == NOT_AUTHORIZED
        assert device.publish(topic, telemetry(4)) == 0
        wait_for(lambda: bool(pipeline.messages), TIMEOUT_S, "the device's message at the pipeline")
        assert pipeline.messages == [(topic, telemetry(4))]
    finally:
        pipeline.close()
        device.close()


@pytest.mark.parametrize("who", ["wrong password", "unknown user", "no password"])
def test_bad_credentials_are_refused(rig: Rig, who: str) -> None:
    device = _devices(rig)[0]
    if who == "wrong password":
        client = connect(rig, device, password=new_secret())
    elif who == "unknown user":
        client = connect(rig, f"{device}-nobody", password=new_secret())
    else:
        client = connect(rig, device, password="")
    try:
        assert client.connack in (BAD_CREDENTIALS, NOT_AUTHORIZED)
    finally:
        client.close()


def test_decommissioned_device_is_refused_after_export(rig: Rig) -> None:
    retired, kept, _ = _devices(rig)
    online = connect(rig, retired)
    neighbour = connect(rig, kept)
    try:
        assert online.connack == 0
        with psycopg.connect(rig.database_url, autocommit=True) as conn:
            decommission(conn, retired)
        # Takes effect at the next export: until then the broker knows nothing of it.
        topic = device_topic(rig.community, "wearable", retired, "telemetry")
        assert online.publish(topic, telemetry(5)) == 0
        rig.export()
        # Mosquitto re-checks connected clients on reload: the retired one is dropped...
        assert online.disconnected.wait(TIMEOUT_S), "still connected after the reload"
        # ...and cannot come back; its neighbour is untouched.
        again = connect(rig, retired, client_id=f"{retired}-again")
        try:
            assert again.connack in (BAD_CREDENTIALS, NOT_AUTHORIZED)
        finally:
            again.close()
        assert not neighbour.disconnected.is_set()
        own = device_topic(rig.community, "wearable", kept, "telemetry")
        assert neighbour.publish(own, telemetry(6)) == 0
    finally:
        online.close()
        neighbour.close()
    assert f"\n{retired}:" not in "\n" + rig.files[0].read_text()
    assert f"user {retired}\n" not in rig.files[1].read_text()


def test_rotated_credentials_take_over_at_the_next_export(rig: Rig) -> None:
    device = _devices(rig)[2]
    old = rig.passwords[device]
    with psycopg.connect(rig.database_url, autocommit=True) as conn:
        _, new = rotate_credentials(conn, device)
    before = connect(rig, device, password=new, client_id=f"{device}-early")
    try:
        assert before.connack in (BAD_CREDENTIALS, NOT_AUTHORIZED), "new password before export"
    finally:
        before.close()
    rig.export()
    for password, expected in ((old, False), (new, True)):
        client = connect(rig, device, password=password, client_id=f"{device}-{expected}")
        try:
            assert (client.connack == 0) is expected
        finally:
            client.close()
