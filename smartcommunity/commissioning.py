"""``smartcommunity devices check ID``: wait for a new device's first message and say what came.

Subscribes to everything published under the device's id in any community and
class (a device configured with the wrong community or class shows up too, with
the mismatch named), waits for the first message that is not a retained leftover,
and judges it the way the gateway will: the payload contract, the registry. Then
it waits a little for the pipeline to store it, if a pipeline is running.
"""

from __future__ import annotations

import queue
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from core.decode import decode
from core.errors import RejectedMessage
from core.topics import ROOT, parse_topic
from simulators.connection import BrokerAddress, connect_client
from store import devices

__all__ = ["Arrival", "judge_message", "wait_for_first_message", "wait_stored"]

# The pipeline commits within its flush interval (200 ms by default); a few seconds
# covers a busy one.
STORED_WAIT_S = 5.0
# Payloads are shown truncated: enough to recognise, not a screenful.
SHOW_BYTES = 300


@dataclass(frozen=True, slots=True)
class Arrival:
    topic: str
    payload: bytes
    retained: bool
    received_at: datetime
    accepted: bool
    verdict: str

    @property
    def shown(self) -> str:
        text = self.payload[:SHOW_BYTES].decode("utf-8", errors="replace")
        return text + ("…" if len(self.payload) > SHOW_BYTES else "")


def judge_message(
    device: devices.DeviceRecord, topic: str, payload: bytes, now: datetime
) -> tuple[bool, str]:
    """Would the pipeline accept this message? (accepted, what it makes of it or why not)."""
    try:
        parsed = parse_topic(topic)
    except RejectedMessage as exc:
        return False, f"refused: {exc.reason} ({exc})"
    if parsed.community_id != device.community_id or parsed.device_class != device.device_class:
        return False, (
            f"refused: published as community {parsed.community_id!r}, class "
            f"{parsed.device_class!r}; the device is registered in {device.community_id!r} as "
            f"{device.device_class!r}: fix the device's topic"
        )
    if device.state == "decommissioned":
        return False, "refused: the device is decommissioned"
    try:
        decoded = decode(parsed, payload, now)
    except RejectedMessage as exc:
        return False, f"refused: {exc.reason} ({exc})"
    if decoded.readings:
        metrics = ", ".join(f"{r.metric}={r.value:g}" for r in decoded.readings)
        return True, f"accepted: {len(decoded.readings)} readings ({metrics})"
    if decoded.event is not None:
        return True, f"accepted: event {decoded.event.event}"
    assert decoded.status is not None
    return True, f"accepted: status {'online' if decoded.status.online else 'offline'}"


def wait_for_first_message(
    mqtt_url: str,
    device: devices.DeviceRecord,
    timeout_s: float,
    *,
    on_retained: Callable[[Arrival], None] | None = None,
) -> Arrival | None:
    """The first live message under the device's id within ``timeout_s``, or None.

    Retained messages (a status from an earlier session) are passed to ``on_retained``
    and the wait goes on: they prove nothing about the device now.
    """
    inbox: queue.Queue[Any] = queue.Queue()
    client = connect_client(
        BrokerAddress.parse(mqtt_url), client_id=f"sc-check-{secrets.token_hex(4)}"
    )

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        inbox.put((message.topic, bytes(message.payload), bool(message.retain)))

    client.on_message = on_message
    try:
        client.subscribe(f"{ROOT}/+/+/{device.id}/+", qos=1)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                topic, payload, retained = inbox.get(timeout=left)
            except queue.Empty:
                break
            now = datetime.now(UTC)
            accepted, verdict = judge_message(device, topic, payload, now)
            arrival = Arrival(topic, payload, retained, now, accepted, verdict)
            if not retained:
                return arrival
            if on_retained is not None:
                on_retained(arrival)
        return None
    finally:
        client.disconnect()
        client.loop_stop()


def wait_stored(database_url: str, device_id: str, since: datetime) -> datetime | None:
    """When the pipeline recorded data from the device at or after ``since``, or None."""
    deadline = time.monotonic() + STORED_WAIT_S
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            heard = devices.last_heard(conn, device_id)
            # Both are stamped by the pipeline; a second of slack for its clock and batching.
            if heard is not None and heard.timestamp() >= since.timestamp() - 1:
                return heard
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
