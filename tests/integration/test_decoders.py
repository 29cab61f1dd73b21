"""Alink and vendor JSON over a real broker into a real PostgreSQL.

Each test writes its own profiles (a product key and a vendor topic unique to
the test), registers its devices, runs the pipeline with those profiles and
plays the device's side with paho: posts, and the ``_reply`` it reads back.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.alink import post_topic, reply_topic
from core.decode import Limits
from core.observability import PipelineCounters
from core.settings import DecoderSettings
from gateway.bridge import parse_mqtt_url
from gateway.decoders import load_profiles
from gateway.replay import Selection, replay
from simulators.alink import alink_devices, load_product, run_alink
from tests.integration.support import count, pipeline_thread, register, wait_for

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0


def write_profiles(folder: Path, product_key: str, vendor_prefix: str) -> Path:
    folder.mkdir()
    (folder / "smoke.yaml").write_text(
        f"""
kind: alink
product_key: {product_key}
device_class: fire
properties:
  CurrentTemperature: {{metric: temperature, unit: Cel}}
  BatteryVoltage: {{metric: battery_v, unit: V, scale: 0.01}}
events:
  Fault: fault
  SmokeAlarm: smoke_alarm
""",
        encoding="utf-8",
    )
    (folder / "locker.yaml").write_text(
        f"""
kind: json
name: test-locker
device_class: locker
topic: {vendor_prefix}/{{device}}/report
device_id: $.sn
time: {{path: $.t, format: epoch_s}}
seq: $.msgNo
metrics:
  - {{path: $.env.temp, metric: temperature, unit: Cel, scale: 0.1}}
  - {{path: $.boxes.used, metric: occupied}}
events:
  - {{event: door_forced, path: $.alarm.code, equals: DOOR_FORCED, data: {{box: $.alarm.box}}}}
""",
        encoding="utf-8",
    )
    return folder


class Device:
    """The device's side: posts, and the replies it is subscribed to."""

    def __init__(self, mqtt_url: str, client_id: str, reply_filter: str) -> None:
        address = parse_mqtt_url(mqtt_url)
        self.replies: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if address.username:
            self.client.username_pw_set(address.username, address.password)
        self.client.on_connect = lambda c, *_: c.subscribe(reply_filter, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.replies.put(
            (m.topic, orjson.loads(m.payload))
        )
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        assert self._subscribed.wait(TIMEOUT_S), "device did not subscribe to its replies"

    def post(self, topic: str, body: object) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(topic, raw, qos=1).wait_for_publish(TIMEOUT_S)

    def reply(self) -> tuple[str, dict[str, Any]]:
        try:
            return self.replies.get(timeout=TIMEOUT_S)
        except queue.Empty:
            raise AssertionError("no reply within the timeout") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def profiles(tmp_path: Path, unique_id: str) -> Path:
    return write_profiles(tmp_path / "profiles", f"pk{unique_id}", f"vendor/{unique_id}")


@pytest.fixture
def device(mqtt_url: str, unique_id: str) -> Iterator[Device]:
    dev = Device(mqtt_url, f"dev-{unique_id}", f"/sys/pk{unique_id}/+/thing/event/+/post_reply")
    yield dev
    dev.close()


def decoding(
    url: str, mqtt_url: str, unique_id: str, community: str, profiles: Path
) -> AbstractContextManager[PipelineCounters]:
    """The pipeline of the test's community, decoding with the test's profiles."""
    return pipeline_thread(
        url, mqtt_url, f"pipe-{unique_id}", community, decoders=DecoderSettings(profiles=profiles)
    )


def alerts_of(url: str, device: str, rule: str | None = None) -> int:
    sql = f"SELECT count(*) FROM alerts WHERE device_id = '{device}'"
    return count(url, sql if rule is None else f"{sql} AND rule_id = '{rule}'")


def _readings(conn: psycopg.Connection[Any], device: str) -> list[tuple[Any, ...]]:
    """(metric, value, ts, seq) of ``device``'s stored readings, by metric."""
    return conn.execute(
        "SELECT metric, value, ts, seq FROM readings WHERE device_id = %s ORDER BY metric",
        (device,),
    ).fetchall()


def now_ms() -> int:
    return int(time.time() * 1000)


def test_alink_property_post_is_stored_before_its_200_reply_and_events_raise_alerts(
    fresh_database_url: str, mqtt_url: str, unique_id: str, profiles: Path, device: Device
) -> None:
    community, smoke = f"c{unique_id}", f"{unique_id}-smoke"
    register(fresh_database_url, community, [smoke], "fire")
    property_topic = post_topic(f"pk{unique_id}", smoke)
    with decoding(fresh_database_url, mqtt_url, unique_id, community, profiles):
        stamped = now_ms() - 5_000
        post = {
            "id": "7",
            "version": "1.0",
            "params": {
                "CurrentTemperature": 23.5,
                "BatteryVoltage": {"value": 362, "time": stamped},
            },
            "method": "thing.event.property.post",
        }
        device.post(property_topic, post)
        topic, body = device.reply()
        # The reply comes after the commit: the readings are there when it arrives.
        stored = f"SELECT count(*) FROM readings WHERE device_id = '{smoke}'"
        assert count(fresh_database_url, stored) == 2
        assert topic == reply_topic(property_topic)
        assert body["code"] == 200
        assert body["id"] == "7"
        assert body["method"] == "thing.event.property.post"
        # A device that missed its answer posts again (same id): answered, stored once.
        device.post(property_topic, post)
        topic, body = device.reply()
        assert (body["code"], body["id"]) == (200, "7")
        assert count(fresh_database_url, stored) == 2

        fault_topic = post_topic(f"pk{unique_id}", smoke, "Fault")
        device.post(fault_topic, {"id": "8", "params": {"value": {"code": 3}, "time": now_ms()}})
        topic, body = device.reply()
        assert (topic, body["code"], body["id"]) == (reply_topic(fault_topic), 200, "8")
        wait_for(
            lambda: alerts_of(fresh_database_url, smoke, "fire.device_fault") == 1,
            TIMEOUT_S,
            "the Alink fault's alert",
        )
    with psycopg.connect(fresh_database_url) as conn:
        rows = _readings(conn, smoke)
        event = conn.execute(
            "SELECT event, data FROM device_events WHERE device_id = %s", (smoke,)
        ).fetchone()
    assert [(m, v, s) for m, v, _, s in rows] == [("battery_v", 3.62, 7), ("temperature", 23.5, 7)]
    assert rows[0][2] == datetime.fromtimestamp(stamped / 1000, UTC)  # the property's own time
    assert event == ("fault", {"code": 3})


def test_refused_alink_posts_are_dead_letters_and_answered_with_the_reason(
    fresh_database_url: str, mqtt_url: str, unique_id: str, profiles: Path, device: Device
) -> None:
    community, smoke = f"c{unique_id}", f"{unique_id}-smoke"
    register(fresh_database_url, community, [smoke], "fire")
    key = f"pk{unique_id}"
    cases = [
        # (topic, payload, expected reason, expected code)
        (post_topic(key, smoke), {"id": "1", "params": {"CurrentTemperature": "hot"}}, 460),
        (post_topic(key, smoke), b'{"id": "2", "params": {', 460),
        (post_topic(key, smoke), {"id": "3", "params": {"Humidity": 40}}, 460),
        (post_topic(key, smoke), {"id": "4", "params": {"CurrentTemperature": 900}}, 460),
        (post_topic(key, smoke, "Exploded"), {"id": "5", "params": {}}, 460),
        (
            post_topic(key, f"{unique_id}-ghost"),
            {"id": "6", "params": {"CurrentTemperature": 20}},
            403,
        ),
    ]
    reasons = [
        "bad_payload",
        "bad_json",
        "unknown_metric",
        "out_of_range",
        "unknown_event",
        "unknown_device",
    ]
    with decoding(fresh_database_url, mqtt_url, unique_id, community, profiles):
        for topic, payload, _code in cases:
            device.post(topic, payload)
        replies = {}
        for _ in cases:
            topic, body = device.reply()
            replies[body["id"]] = (topic, body)
    assert sorted(replies) == ["1", "2", "3", "4", "5", "6"]  # even the unparseable one's id
    for n, ((topic, _payload, code), reason) in enumerate(zip(cases, reasons, strict=True), 1):
        reply_to, body = replies[str(n)]
        assert reply_to == reply_topic(topic)
        assert body["code"] == code, body
        assert body["message"].startswith(f"{reason}: "), body
    with psycopg.connect(fresh_database_url) as conn:
        dead = conn.execute("SELECT topic, reason FROM dead_letters ORDER BY id").fetchall()
    assert sorted(dead) == sorted((t, r) for (t, _, _), r in zip(cases, reasons, strict=True))
    assert count(fresh_database_url) == 0
    # Once the installer registers the unknown device, its post replays through the profile.
    register(fresh_database_url, community, [f"{unique_id}-ghost"], "fire")
    results = replay(
        fresh_database_url,
        Selection(reason="unknown_device"),
        limits=Limits(),
        worker=f"replay-{unique_id}",
        decoders=load_profiles(profiles),
    )
    assert [(r.outcome, r.topic) for r in results] == [("stored", cases[-1][0])]
    assert count(fresh_database_url) == 1


def test_a_vendor_profile_maps_a_vendor_payload_to_readings_and_an_event(
    fresh_database_url: str, mqtt_url: str, unique_id: str, profiles: Path, device: Device
) -> None:
    community, locker = f"c{unique_id}", f"HB-{unique_id}"
    register(fresh_database_url, community, [locker], "locker")
    sent_at = int(time.time()) - 60
    payload = {
        "sn": locker,
        "t": sent_at,
        "msgNo": 881,
        "env": {"temp": 231},
        "boxes": {"used": 37},
        "alarm": {"code": "DOOR_FORCED", "box": 12},
    }
    with decoding(fresh_database_url, mqtt_url, unique_id, community, profiles):
        device.post(f"vendor/{unique_id}/{locker}/report", payload)
        # Someone else's serial in the body: refused, not filed under the topic's device.
        device.post(f"vendor/{unique_id}/{locker}/report", {**payload, "sn": "HB-other"})
        wait_for(
            lambda: count(fresh_database_url, "SELECT count(*) FROM dead_letters") == 1,
            TIMEOUT_S,
            "the mismatched serial's dead letter",
        )
        wait_for(
            lambda: count(fresh_database_url, "SELECT count(*) FROM device_events") == 1,
            TIMEOUT_S,
            "the vendor message",
        )
        wait_for(
            lambda: alerts_of(fresh_database_url, locker) >= 1, TIMEOUT_S, "the forced door's alert"
        )
    with psycopg.connect(fresh_database_url) as conn:
        rows = _readings(conn, locker)
        event = conn.execute(
            "SELECT event, data, ts FROM device_events WHERE device_id = %s", (locker,)
        ).fetchone()
        dead = conn.execute("SELECT reason, detail FROM dead_letters").fetchone()
    when = datetime.fromtimestamp(sent_at, UTC)
    assert rows == [("occupied", 37.0, when, 881), ("temperature", 23.1, when, 881)]
    assert event == ("door_forced", {"box": 12}, when)
    assert dead is not None
    assert dead[0] == "bad_payload"
    assert "HB-other" in dead[1]


def test_simulated_alink_devices_are_stored_and_answered_200(
    fresh_database_url: str, mqtt_url: str, unique_id: str, profiles: Path
) -> None:
    community = f"c{unique_id}"
    product = load_product(profiles / "smoke.yaml")
    devices = alink_devices(product, community_id=community, count=3)
    register(fresh_database_url, community, [d.id for d in devices], "fire")
    # A minute of device time a round, whatever the machine's timing: the seed fixes the posts.
    readings = itertools.count()
    start = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    with decoding(fresh_database_url, mqtt_url, unique_id, community, profiles):
        stats = run_alink(
            mqtt_url=mqtt_url,
            product=product,
            devices=devices,
            rounds=4,
            interval_s=0.0,
            seed=3,
            clock=lambda: start + timedelta(minutes=next(readings)),
            answer_wait_s=TIMEOUT_S,
        )
    # Every round, each device posts its temperature (the product's property it measures).
    assert stats.posts >= 4 * len(devices)
    assert (stats.accepted, stats.refused) == (stats.posts, {})
    stored = count(fresh_database_url, "SELECT count(DISTINCT device_id) FROM readings")
    assert stored == len(devices)
    assert count(fresh_database_url, "SELECT count(*) FROM dead_letters") == 0
