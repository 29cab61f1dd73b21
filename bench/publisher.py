"""The benchmarks' MQTT side: a connected client, a primed persistent session, and the
workload published at QoS 1 within a window of unacknowledged messages."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.baselines import new_client
from bench.fixture import START_TIMEOUT_S, BenchError, Workload

TOPIC_FILTER = "community/+/+/+/+"  # what the platform subscribes
# Long enough to outlive the wait between priming a session and the ingester's start.
SESSION_EXPIRY_S = 3600
# QoS 1 messages the publisher keeps unacknowledged: enough to hide the round trip.
PUBLISH_WINDOW = 2_000


def mqtt_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


def connected_client(
    url: str, client_id: str, *, clean_start: bool, v5: bool = True, max_inflight: int = 20
) -> mqtt.Client:
    client = new_client(client_id, v5=v5, clean_start=clean_start)
    client.max_inflight_messages_set(max_inflight)
    connected = threading.Event()
    refused: list[ReasonCode] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refused.append(reason)
        connected.set()

    client.on_connect = on_connect
    host, port = mqtt_address(url)
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0 if clean_start else SESSION_EXPIRY_S
        client.connect(host, port, keepalive=60, clean_start=clean_start, properties=properties)
    else:
        client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(START_TIMEOUT_S) or refused:
        client.loop_stop()
        raise BenchError(f"MQTT connection to {url} failed: {refused or 'no CONNACK'}")
    return client


def prime_session(url: str, client_id: str, *, v5: bool) -> None:
    """Leave a persistent QoS 1 subscription for ``client_id`` at the broker, as the
    ingester itself would on its first start."""
    client = connected_client(url, client_id, clean_start=False, v5=v5)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()
    try:
        if v5:
            client.subscribe(TOPIC_FILTER, options=SubscribeOptions(qos=1))
        else:
            client.subscribe(TOPIC_FILTER, qos=1)
        if not subscribed.wait(START_TIMEOUT_S):
            raise BenchError("no SUBACK while priming the session")
    finally:
        client.disconnect()
        client.loop_stop()


def publish(url: str, workload: Workload, *, timeout_s: float) -> float:
    """Publish every message at QoS 1 and wait for all PUBACKs; return the seconds taken."""
    client = connected_client(
        url, f"sc-bench-pub-{secrets.token_hex(4)}", clean_start=True, max_inflight=0
    )
    done = threading.Condition()
    acked = 0
    failures: list[str] = []

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        nonlocal acked
        with done:
            acked += 1
            # 0x10 "no matching subscribers" means no session holds the message.
            if reason.is_failure or reason.value == 0x10:
                failures.append(str(reason))
            done.notify_all()

    client.on_publish = on_publish
    topics = [workload.topic(d) for d in range(workload.devices)]
    started = time.monotonic()
    deadline = started + timeout_s
    try:
        for i in range(workload.messages):
            # Our own window: paho's (max_inflight_messages) rescans every message in
            # flight on each PUBACK, which made publishing CPU-bound at ~4k/s. Once
            # full, wait for half of it, not for each PUBACK (a wake-up per message).
            if i - acked >= PUBLISH_WINDOW:
                with done:
                    while i - acked > PUBLISH_WINDOW // 2:
                        if not done.wait(max(0.0, deadline - time.monotonic())):
                            raise BenchError(f"publishing: {acked}/{i} acked at the deadline")
            info = client.publish(topics[i % workload.devices], workload.payload(i), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BenchError(f"publish {i} failed: {mqtt.error_string(info.rc)}")
        with done:
            while acked < workload.messages:
                if not done.wait(max(0.0, deadline - time.monotonic())):
                    raise BenchError(f"publishing: {acked}/{workload.messages} acked in time")
        if failures:
            raise BenchError(f"{len(failures)} publishes refused, first: {failures[0]}")
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


def publish_into(
    url: str,
    workload: Workload,
    timeout_s: float,
    seconds: list[float],
    errors: list[BaseException],
) -> None:
    try:
        seconds.append(publish(url, workload, timeout_s=timeout_s))
    except BaseException as exc:  # noqa: BLE001 - handed to the measuring thread
        errors.append(exc)
