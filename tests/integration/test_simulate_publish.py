"""The simulator against a real broker: everything arrives, on the contract, statuses retained."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from core.metric_catalog import METRICS
from core.models import EventEnvelope, StatusEnvelope, TelemetryEnvelope
from core.topics import Channel, parse_topic
from simulators.community import demo_devices
from simulators.connection import BrokerAddress, negotiate_protocol
from simulators.publisher import Simulator
from smartcommunity.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration

# Generous for a loaded CI machine; a healthy broker delivers in milliseconds.
ARRIVAL_TIMEOUT_S = 15.0


class Inbox:
    """Every message on one filter, collected by a plain 3.1.1 subscriber (any broker)."""

    def __init__(self) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._changed = threading.Condition()

    def on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def wait_for(self, done: Callable[[list[mqtt.MQTTMessage]], bool]) -> list[mqtt.MQTTMessage]:
        with self._changed:
            self._changed.wait_for(lambda: done(self.messages), ARRIVAL_TIMEOUT_S)
            return list(self.messages)


@contextmanager
def subscribed(mqtt_url: str, topic_filter: str, client_id: str) -> Iterator[Inbox]:
    address = BrokerAddress.parse(mqtt_url)
    inbox = Inbox()
    subscribed_ = threading.Event()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    client.on_message = inbox.on_message
    client.on_subscribe = lambda *_: subscribed_.set()
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        client.subscribe(topic_filter, qos=1)
        assert subscribed_.wait(ARRIVAL_TIMEOUT_S), "no SUBACK"
        yield inbox
    finally:
        client.disconnect()
        client.loop_stop()


def by_channel(messages: list[mqtt.MQTTMessage], channel: Channel) -> list[mqtt.MQTTMessage]:
    return [m for m in messages if m.topic.endswith(f"/{channel.value}")]


def topics_of(messages: list[mqtt.MQTTMessage]) -> set[str]:
    # A set: amqtt may hand a new subscription the same retained message twice.
    return {m.topic for m in messages}


def clear_retained(mqtt_url: str, topics: list[str]) -> None:
    """Leave the shared broker as we found it: an empty retained payload deletes."""
    address = BrokerAddress.parse(mqtt_url)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in topics]
        for info in infos:
            info.wait_for_publish(ARRIVAL_TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()


def _midday_clock(step_s: float) -> Callable[[], datetime]:
    """Community noon, ``step_s`` later at every reading, whatever the wall clock says.

    The models' incidents follow the residents' day: read from the wall clock, a
    seeded run at 04:00 in Beijing drew no event where one at noon drew several;
    stepped by the wall clock, the draws followed the machine's timing. The
    simulator reads its clock once per message, so this clock and the seed fix them.
    """
    readings = itertools.count()
    start = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    return lambda: start + timedelta(seconds=next(readings) * step_s)


def test_every_message_arrives_on_the_contract(mqtt_url: str, unique_id: str) -> None:
    devices = demo_devices(community_id=unique_id, count=20, seed=5)
    roster = {d.id: d for d in devices}
    simulator = Simulator(
        devices=devices,
        mqtt_url=mqtt_url,
        seed=5,
        rate=500,
        max_messages=200,
        incident_scale=200.0,
        mark_offline_on_stop=False,
        clock=_midday_clock(step_s=1.2),  # 600 x the pace of 500 messages a second
    )
    with subscribed(mqtt_url, f"community/{unique_id}/#", f"{unique_id}-sub") as inbox:
        stats = simulator.run()
        total = stats.sent
        messages = inbox.wait_for(lambda got: len(got) >= total)

    assert (stats.telemetry, stats.statuses) == (200, 20)
    assert stats.events > 0
    assert (stats.unconfirmed, stats.refused) == (0, 0)
    assert stats.elapsed_s >= 199 / 500  # paced, not flooded
    assert len(messages) == total
    seqs: dict[str, set[int]] = {d: set() for d in roster}
    for message in messages:
        topic = parse_topic(message.topic)
        device = roster[topic.device_id]
        assert (topic.community_id, topic.device_class) == (unique_id, device.device_class)
        if topic.channel is Channel.TELEMETRY:
            telemetry = TelemetryEnvelope.model_validate_json(message.payload)
            catalogue = METRICS[device.device_class]
            for name, value in telemetry.metrics.items():
                assert catalogue[name].low <= value <= catalogue[name].high
            seq = telemetry.seq
        elif topic.channel is Channel.EVENT:
            seq = EventEnvelope.model_validate_json(message.payload).seq
        else:
            assert StatusEnvelope.model_validate_json(message.payload).online is True
            continue
        assert seq is not None
        assert seq not in seqs[device.id]
        seqs[device.id].add(seq)
    assert len(by_channel(messages, Channel.TELEMETRY)) == 200
    assert len(by_channel(messages, Channel.EVENT)) == stats.events

    status_filter = f"community/{unique_id}/+/+/status"
    with subscribed(mqtt_url, status_filter, f"{unique_id}-late") as late:
        retained = late.wait_for(lambda got: len(topics_of(got)) >= len(devices))
    assert topics_of(retained) == {
        f"community/{unique_id}/{d.device_class}/{d.id}/status" for d in devices
    }
    assert all(m.retain for m in retained)
    assert all(StatusEnvelope.model_validate_json(m.payload).online for m in retained)
    clear_retained(mqtt_url, sorted(topics_of(retained)))


def test_stop_ends_the_run_and_marks_devices_offline(mqtt_url: str, unique_id: str) -> None:
    devices = demo_devices(community_id=unique_id, count=8, seed=1)
    simulator = Simulator(devices=devices, mqtt_url=mqtt_url, rate=100)  # no limit: stop() ends it
    stopped_at: list[float] = []

    def stop_after_20(inbox: Inbox) -> None:
        inbox.wait_for(lambda got: len(by_channel(got, Channel.TELEMETRY)) >= 20)
        stopped_at.append(time.monotonic())
        simulator.stop()

    with subscribed(mqtt_url, f"community/{unique_id}/#", f"{unique_id}-live") as live:
        stopper = threading.Thread(target=stop_after_20, args=(live,), name="stopper")
        stopper.start()
        try:
            stats = simulator.run()
        finally:
            simulator.stop()
            stopper.join()
    assert time.monotonic() - stopped_at[0] < 5
    assert stats.telemetry >= 20
    assert stats.statuses == 2 * len(devices)
    assert stats.unconfirmed == 0

    with subscribed(mqtt_url, f"community/{unique_id}/+/+/status", f"{unique_id}-sub") as inbox:
        retained = inbox.wait_for(lambda got: len(topics_of(got)) >= len(devices))
    assert len(topics_of(retained)) == len(devices)
    assert not any(StatusEnvelope.model_validate_json(m.payload).online for m in retained)
    clear_retained(mqtt_url, sorted(topics_of(retained)))


def test_per_device_connections(mqtt_url: str, unique_id: str) -> None:
    devices = demo_devices(community_id=unique_id, count=4, seed=2)
    simulator = Simulator(
        devices=devices,
        mqtt_url=mqtt_url,
        rate=200,
        max_messages=40,
        per_device_connections=True,
        client_id=f"{unique_id}-sim",
    )
    with subscribed(mqtt_url, f"community/{unique_id}/#", f"{unique_id}-sub") as inbox:
        stats = simulator.run()
        messages = inbox.wait_for(lambda got: len(got) >= stats.sent)
    assert stats.unconfirmed == 0
    assert len(by_channel(messages, Channel.TELEMETRY)) == 40
    assert {parse_topic(m.topic).device_id for m in messages} == {d.id for d in devices}
    clear_retained(mqtt_url, sorted(topics_of(by_channel(messages, Channel.STATUS))))


def test_falls_back_to_mqtt_311_on_amqtt(tmp_path: Path, unique_id: str) -> None:
    with EmbeddedBroker(data_dir=tmp_path / "amqtt", kind="amqtt") as broker:
        address = BrokerAddress.parse(broker.url)
        assert negotiate_protocol(address, client_id=f"{unique_id}-probe") == "3.1.1"
        devices = demo_devices(community_id=unique_id, count=4, seed=3)
        with subscribed(broker.url, f"community/{unique_id}/#", f"{unique_id}-sub") as inbox:
            stats = Simulator(devices=devices, mqtt_url=broker.url, rate=200, max_messages=20).run()
            messages = inbox.wait_for(lambda got: len(got) >= stats.sent)
        assert stats.unconfirmed == 0
        assert len(by_channel(messages, Channel.TELEMETRY)) == 20


def test_without_a_rate_each_device_reports_at_its_own_interval(
    mqtt_url: str, unique_id: str
) -> None:
    # Three devices at 1, 2 and 4 s: over 8 s about 8, 4 and 2 reports, not the
    # fleet's total rate served in turn (every device at the same pace).
    devices = [
        d.model_copy(update={"expected_interval_s": interval})
        for d, interval in zip(
            demo_devices(community_id=unique_id, count=3, seed=2), (1, 2, 4), strict=True
        )
    ]
    simulator = Simulator(
        devices=devices, mqtt_url=mqtt_url, seed=2, duration_s=8, mark_offline_on_stop=False
    )
    with subscribed(mqtt_url, f"community/{unique_id}/+/+/telemetry", f"{unique_id}-s") as inbox:
        stats = simulator.run()
        messages = inbox.wait_for(lambda got: len(got) >= stats.telemetry)
    per_device = {d.id: 0 for d in devices}
    for message in messages:
        per_device[parse_topic(message.topic).device_id] += 1
    elapsed = stats.elapsed_s
    for device in devices:
        expected = elapsed / device.expected_interval_s
        # The first report falls anywhere in the first interval; jitter is 5 %.
        assert expected - 1.5 <= per_device[device.id] <= expected + 1, (device, per_device)
    clear_retained(
        mqtt_url, [f"community/{unique_id}/{d.device_class}/{d.id}/status" for d in devices]
    )
