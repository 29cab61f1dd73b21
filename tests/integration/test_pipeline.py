"""The pipeline against a real broker and a real PostgreSQL."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.bridge import parse_mqtt_url
from gateway.pipeline import METRICS_EVERY_S
from smartcommunity.embedded import EmbeddedBroker
from tests.integration.support import (
    Publisher,
    community_of,
    count,
    pipeline_thread,
    register,
    stream,
    wait_committed,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_messages_become_rows_and_last_seen_follows_device_time(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community, devices = community_of(fresh_database_url, f"c{unique_id}", 5)
    base = int(time.time() * 1000) - 60_000
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    try:
        with pipeline_thread(fresh_database_url, mqtt_url, f"p-{unique_id}", community):
            stream(publisher, community, devices, 250, base)
            publisher.flush()
            wait_for(lambda: count(fresh_database_url) >= 750, 30, "750 rows")
            # A late reading (device time in the past) must not move last_seen back.
            late = {"ts": base - 3_600_000, "seq": 99_999, "metrics": {"battery": 40}}
            publisher.publish(
                f"community/{community}/wearable/{devices[0]}/telemetry", json.dumps(late).encode()
            )
            publisher.flush()
            wait_for(lambda: count(fresh_database_url) >= 751, 30, "the late row")
    finally:
        publisher.close()
    assert count(fresh_database_url) == 751
    assert count(fresh_database_url, "SELECT count(DISTINCT device_id) FROM readings") == 5
    newest = count(
        fresh_database_url,
        "SELECT (extract(epoch FROM last_seen) * 1000)::bigint FROM devices "
        f"WHERE id = '{devices[0]}'",
    )
    assert newest == base + 245  # device 0 sent seq 0, 5, ..., 245
    assert count(fresh_database_url, "SELECT count(*) FROM dead_letters") == 0


def test_duplicates_are_stored_once(fresh_database_url: str, mqtt_url: str, unique_id: str) -> None:
    community, device = f"c{unique_id}", f"w{unique_id}"
    register(fresh_database_url, community, [device])
    topic = f"community/{community}/wearable/{device}/telemetry"
    now = int(time.time() * 1000)
    first = json.dumps({"ts": now, "seq": 1, "metrics": {"heart_rate": 70, "spo2": 98}})
    restamped = json.dumps({"ts": now + 500, "seq": 1, "metrics": {"heart_rate": 70, "spo2": 98}})
    no_seq = json.dumps({"ts": now + 1000, "metrics": {"battery": 70}})
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    try:
        with pipeline_thread(fresh_database_url, mqtt_url, f"p-{unique_id}", community) as pipe:
            for n, payload in enumerate((first, first, restamped, no_seq, no_seq), start=1):
                publisher.publish(topic, payload.encode())
                publisher.flush()
                # Each in a batch of its own: the database key must catch them too.
                wait_committed(pipe, n)
    finally:
        publisher.close()
    assert count(fresh_database_url) == 3


def test_bad_messages_become_dead_letters_and_the_pipeline_goes_on(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community, device = f"c{unique_id}", f"w{unique_id}"
    register(fresh_database_url, community, [device])
    now = int(time.time() * 1000)
    base = f"community/{community}/wearable/{device}"
    good = json.dumps({"ts": now, "seq": 1, "metrics": {"heart_rate": 70}}).encode()
    bad = {
        f"{base}/telemetry": [b"{not json", b'{"ts": 1, "metrics": {"heart_rate": 70}}'],
        f"community/{community}/wearable/ghost-{unique_id}/telemetry": [good],
        f"community/{community}/fire/{device}/telemetry": [good],
        # jsonb refuses NUL: valid JSON the database will not take.
        f"{base}/event": [
            json.dumps({"ts": now, "event": "sos_pressed", "data": {"n": "a\0b"}}).encode(),
            # A misspelt SOS: never stored as an event no rule reads.
            json.dumps({"ts": now, "event": "sos"}).encode(),
        ],
    }
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    try:
        with pipeline_thread(fresh_database_url, mqtt_url, f"p-{unique_id}", community):
            for topic, payloads in bad.items():
                for payload in payloads:
                    publisher.publish(topic, payload)
            publisher.publish(f"{base}/telemetry", good)
            publisher.publish(
                f"{base}/event", json.dumps({"ts": now, "event": "fall_detected"}).encode()
            )
            publisher.flush()
            wait_for(
                lambda: count(fresh_database_url, "SELECT count(*) FROM dead_letters") >= 6,
                30,
                "dead letters",
            )
            wait_for(lambda: count(fresh_database_url) >= 1, 30, "the good reading")
            wait_for(
                lambda: count(fresh_database_url, "SELECT count(*) FROM device_events") >= 1,
                30,
                "the good event",
            )
    finally:
        publisher.close()
    reasons = count(
        fresh_database_url,
        "SELECT count(*) FROM dead_letters WHERE (reason, topic) IN ("
        f"('bad_json', '{base}/telemetry'), ('bad_payload', '{base}/telemetry'),"
        f"('unknown_device', 'community/{community}/wearable/ghost-{unique_id}/telemetry'),"
        f"('class_mismatch', 'community/{community}/fire/{device}/telemetry'),"
        f"('database_refused', '{base}/event'), ('unknown_event', '{base}/event'))",
    )
    assert reasons == 6
    assert count(fresh_database_url, "SELECT count(*) FROM dead_letters") == 6
    raw = count(
        fresh_database_url,
        "SELECT count(*) FROM dead_letters WHERE payload = '\\x7b6e6f74206a736f6e'::bytea",
    )
    assert raw == 1  # the raw bytes are kept exactly
    assert count(fresh_database_url) == 1
    assert count(fresh_database_url, "SELECT count(*) FROM device_events") == 1


def test_committed_messages_are_acknowledged_and_counted(
    fresh_database_url: str, private_broker: EmbeddedBroker, unique_id: str
) -> None:
    """After a clean stop the broker holds nothing for the pipeline's session: every
    committed message was acknowledged, none is delivered again."""
    community, devices = community_of(fresh_database_url, f"a{unique_id}", 20)
    client_id = f"p-{unique_id}"
    publisher = Publisher(private_broker.url, f"pub-{unique_id}")
    try:
        with pipeline_thread(fresh_database_url, private_broker.url, client_id, community):
            stream(publisher, community, devices, 3000, int(time.time() * 1000) - 60_000)
            publisher.flush()
            wait_for(lambda: count(fresh_database_url) >= 9000, 60, "9000 rows")
            # One save of the counters (every METRICS_EVERY_S) that has seen them all.
            wait_for(
                lambda: _saved_counter(fresh_database_url, client_id) == 3000,
                METRICS_EVERY_S * 6,
                "the saved counters",
            )
    finally:
        publisher.close()
    redelivered = _drain_session(private_broker.url, client_id)
    assert redelivered == 0
    with psycopg.connect(fresh_database_url) as conn:
        row = conn.execute(
            "SELECT counters FROM pipeline_metrics WHERE worker = %s", (client_id,)
        ).fetchone()
    assert row is not None
    counters = row[0]
    assert counters["messages_received_total"] == 3000
    assert counters["rows_written_total"] == 9000
    assert counters["messages_rejected_total"] == {}


def _saved_counter(url: str, worker: str) -> int | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (counters->>'messages_received_total')::int FROM pipeline_metrics"
            " WHERE worker = %s",
            (worker,),
        ).fetchone()
    return None if row is None else int(row[0])


def _drain_session(mqtt_url: str, client_id: str) -> int:
    """Reconnect as the pipeline's session and count what the broker still delivers.

    The broker sends a kept session's messages right after accepting the connection;
    a marker the client publishes to itself afterwards comes behind them, so once the
    marker is back everything the session held has been delivered.
    """
    received: list[str] = []
    marker = f"marker/{client_id}"
    back = threading.Event()
    address = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            back.set()
        else:
            received.append(msg.topic)

    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 60
    client.connect(address.host, address.port, clean_start=False, properties=properties)
    client.loop_start()
    try:
        client.subscribe(marker, qos=1)
        client.publish(marker, b"end", qos=1)
        assert back.wait(30), "the marker never came back"
    finally:
        client.disconnect()
        client.loop_stop()
    return len(received)
