"""Link loss and lying clocks through the real broker, pipeline and database.

A Last Will composed as installers used to be told (``{"online": false, "ts":
<connect time>}``) must mark the device offline at once and raise the offline
alert after the grace; a reconnect must resolve it, and a reconnect storm must
raise nothing. A clock 3 h fast must not pin ``latest`` or ``last_seen`` in the
future, and raises one ``clock_skew`` alert that resolves once the clock is fixed.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.rules import parse_rule
from core.topics import device_topic
from gateway.bridge import parse_mqtt_url
from store import rules as rules_store
from tests.integration.support import Publisher, count, one_row, pipeline_thread, register, wait_for

pytestmark = pytest.mark.integration

GRACE_S = 2


def install_rules(url: str) -> None:
    """The two rules under test, with a short grace so the test does not wait a minute."""
    rules = [
        parse_rule(
            {
                "id": "device.offline",
                "type": "absence",
                "title": "Device offline",
                "severity": "minor",
                "link_loss_grace": GRACE_S,
                "link_loss_classes": ["wearable"],
            }
        ),
        parse_rule(
            {
                "id": "device.clock_skew",
                "type": "clock_skew",
                "title": "Clock ahead",
                "severity": "warning",
                "max_ahead": "5m",
            }
        ),
    ]
    with psycopg.connect(url) as conn:
        rules_store.upsert_rules(conn, rules, "test")


class Device:
    """A wearable with the Will the old installer guide described."""

    def __init__(self, mqtt_url: str, community: str, device_id: str) -> None:
        self.address = parse_mqtt_url(mqtt_url)
        self.status_topic = device_topic(community, "wearable", device_id, "status")
        self.device_id = device_id
        self.client: mqtt.Client | None = None

    def connect(self) -> None:
        connected_ms = int(time.time() * 1000)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv5,
        )
        # The Will's ts is the connect time: older than the online status that follows.
        client.will_set(
            self.status_topic,
            json.dumps({"online": False, "ts": connected_ms}),
            qos=1,
            retain=True,
        )
        up = threading.Event()
        client.on_connect = lambda *_: up.set()
        client.connect(self.address.host, self.address.port, keepalive=60)
        client.loop_start()
        assert up.wait(10), "device did not connect"
        online = json.dumps({"online": True, "ts": int(time.time() * 1000) + 1000})
        client.publish(self.status_topic, online, qos=1, retain=True).wait_for_publish(10)
        self.client = client

    def drop_link(self) -> None:
        """The TCP connection dies without a DISCONNECT: the broker publishes the Will."""
        assert self.client is not None
        self.client.loop_stop()
        sock = self.client.socket()
        assert sock is not None
        sock.close()
        self.client = None

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


def online(url: str, device_id: str) -> bool | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = one_row(conn, "SELECT online FROM devices WHERE id = %s", (device_id,))
    return None if row[0] is None else bool(row[0])


def alerts(url: str, device_id: str, rule_id: str) -> list[tuple[str, dict[str, object]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, details FROM alerts WHERE device_id = %s AND rule_id = %s ORDER BY id",
            (device_id, rule_id),
        ).fetchall()
    return [(str(state), dict(details)) for state, details in rows]


def test_a_will_with_an_old_ts_is_offline_at_once_and_alerts_after_the_grace(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    url = fresh_database_url
    community = f"c{unique_id}"
    watch, storm, control = (f"{name}-{unique_id}" for name in ("watch", "storm", "control"))
    register(url, community, [watch, storm, control])
    install_rules(url)
    devices = {d: Device(mqtt_url, community, d) for d in (watch, storm, control)}
    try:
        with pipeline_thread(url, mqtt_url, f"p-{unique_id}", community):
            for device in devices.values():
                device.connect()
            wait_for(lambda: all(online(url, d) is True for d in devices), 30, "all online")

            devices[watch].drop_link()
            wait_for(lambda: online(url, watch) is False, 30, "the Will to mark it offline")
            wait_for(lambda: alerts(url, watch, "device.offline") != [], 30, "the offline alert")
            ((state, details),) = alerts(url, watch, "device.offline")
            assert state == "open"
            assert details["reason"] == "link_lost"

            devices[watch].connect()
            wait_for(lambda: online(url, watch) is True, 30, "online again")
            wait_for(
                lambda: [s for s, _ in alerts(url, watch, "device.offline")] == ["resolved"],
                30,
                "the reconnect to resolve the alert",
            )

            for _ in range(5):  # a reconnect storm, each reconnect well within the grace
                devices[storm].drop_link()
                wait_for(lambda: online(url, storm) is False, 30, "the storm's Will")
                devices[storm].connect()
                wait_for(lambda: online(url, storm) is True, 30, "the storm's reconnect")
            # The control device's link drops after the storm: once its alert is up,
            # the grace after the storm's last Will has passed too.
            devices[control].drop_link()
            wait_for(lambda: alerts(url, control, "device.offline") != [], 30, "control alert")
            assert alerts(url, storm, "device.offline") == []
            assert online(url, storm) is True
    finally:
        for device in devices.values():
            device.close()


def test_a_clock_3_h_fast_is_stored_as_sent_but_never_pins_latest_in_the_future(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    url = fresh_database_url
    community, device = f"c{unique_id}", f"w{unique_id}"
    register(url, community, [device])
    install_rules(url)
    topic = device_topic(community, "wearable", device, "telemetry")
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    fast = timedelta(hours=3)

    def send(seq: int, at: datetime, battery: float) -> None:
        ts = int(at.timestamp() * 1000)
        payload = {"ts": ts, "seq": seq, "metrics": {"battery": battery}}
        publisher.publish(topic, json.dumps(payload).encode())

    try:
        publisher.wait_connected()
        with pipeline_thread(url, mqtt_url, f"p-{unique_id}", community):
            start = datetime.now(UTC) + fast
            for seq in range(1, 4):  # a second apart: (device, metric, ts) is the key
                send(seq, start + timedelta(seconds=seq), 80 + seq)
            publisher.flush()
            wait_for(lambda: count(url) == 3, 30, "the fast readings")
            wait_for(lambda: alerts(url, device, "device.clock_skew") != [], 30, "clock_skew")
            with psycopg.connect(url, autocommit=True) as conn:
                stored = one_row(
                    conn,
                    "SELECT min(ts - received_at) FROM readings WHERE device_id = %s",
                    (device,),
                )
                assert stored[0] > fast - timedelta(minutes=1)
                row = conn.execute(
                    "SELECT l.ts - l.received_at, d.last_seen - d.last_received_at"
                    " FROM latest AS l JOIN devices AS d ON d.id = l.device_id"
                    " WHERE l.device_id = %s",
                    (device,),
                ).fetchone()
            assert row is not None
            assert row[0] <= timedelta(seconds=5)  # latest: not in the future
            assert row[1] <= timedelta(seconds=5)  # last_seen: not in the future

            # The clock is fixed. The fast reading counts as received + 5 s (the
            # tolerance), so a correct one sent after that is the newer.
            with psycopg.connect(url, autocommit=True) as conn:
                held = conn.execute(
                    "SELECT ts FROM latest WHERE device_id = %s", (device,)
                ).fetchone()
            assert held is not None
            wait_for(lambda: datetime.now(UTC) > held[0], 30, "the tolerance to pass")
            fixed = datetime.now(UTC)
            for seq in range(4, 7):
                send(seq, fixed + timedelta(milliseconds=seq), 70 + seq)
            publisher.flush()
            wait_for(
                lambda: [s for s, _ in alerts(url, device, "device.clock_skew")] == ["resolved"],
                30,
                "the clock_skew alert to resolve",
            )
            wait_for(
                lambda: count(url, f"SELECT value FROM latest WHERE device_id = '{device}'") == 76,
                30,
                "a correct reading to replace the fast one in latest",
            )
    finally:
        publisher.close()
    ((state, details),) = alerts(url, device, "device.clock_skew")  # one alert, not one per reading
    assert state == "resolved"
    assert float(str(details["ahead_s"])) > 3 * 3600 - 60
