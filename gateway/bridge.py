"""The paho-mqtt side: one persistent, manually acknowledged subscription.

Callbacks run on paho's network thread and only hand messages off. Acks are
sent from the pipeline's thread after commit (safe with ``loop_start``), and
never across a reconnect: the broker re-sends unacked messages after one, so a
stale ack could confirm a different, uncommitted message.
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.matcher import MQTTMatcher
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.errors import ConfigurationError, ServiceUnavailable
from core.settings import GatewaySettings

__all__ = ["BrokerAddress", "InboundMessage", "MqttBridge", "parse_mqtt_url"]

_PUBACK = struct.Struct("!BBH")


class _SharedTableProperties(Properties):
    """paho's ``Properties`` builds its constant tables (two dicts and a list) anew for
    each object, i.e. for every MQTT 5 PUBLISH received, and ``clear()`` then walks
    all 27 property names: together a tenth of the pipeline's CPU in the profile.
    This shares the tables, which nothing mutates, and skips clearing a new object.
    Its attributes are set past paho's ``__setattr__`` (a name check per call), and a
    PUBLISH without properties, the usual one, is not parsed."""

    _tables: tuple[Any, Any, Any] | None = None

    def __init__(self, packetType: int) -> None:
        tables = _SharedTableProperties._tables
        if tables is None:
            super().__init__(packetType)  # type: ignore[no-untyped-call]
            _SharedTableProperties._tables = (self.types, self.names, self.properties)
            return
        self.__dict__.update(
            packetType=packetType, types=tables[0], names=tables[1], properties=tables[2]
        )

    def clear(self) -> None:
        if len(self.__dict__) > 4:  # anything besides packetType and the tables
            super().clear()  # type: ignore[no-untyped-call]

    def unpack(self, buffer: bytes) -> tuple[Properties, int]:
        # A zero property length is one byte, 0x00; anything else is parsed by paho.
        if len(self.__dict__) == 4 and buffer[:1] == b"\x00":
            return self, 1
        return super().unpack(buffer)  # type: ignore[no-untyped-call,no-any-return]


class _NoFilterMatcher(MQTTMatcher):
    """paho looks up per-topic callbacks for every message received, with a recursive
    generator over the topic's levels (a twentieth of the pipeline's CPU in the
    profile). We register none (``message_callback_add``), so while none is
    registered the answer is "none" at once."""

    _filters = False

    def __setitem__(self, key: str, value: Any) -> None:
        self._filters = True
        super().__setitem__(key, value)  # type: ignore[no-untyped-call]

    def iter_match(self, topic: str) -> Iterator[Any]:
        if not self._filters:
            return iter(())
        return super().iter_match(topic)  # type: ignore[no-untyped-call,no-any-return]


# decode_publish looks ``Properties`` up in its module at each call; the version range
# in pyproject.toml keeps that module where it is (as for _packet_queue below).
if getattr(paho_packet, "Properties", None) is Properties:
    setattr(paho_packet, "Properties", _SharedTableProperties)  # noqa: B010 - a private module
# paho's packet queue is private; ack() falls back to one call per message if a
# future paho drops it. The version range in pyproject.toml keeps it there.
_queue_packet = getattr(mqtt.Client, "_packet_queue", None)

_LOG = logging.getLogger(__name__)
# How long to wait for a CONNACK when finding out whether the broker speaks MQTT 5.
_PROBE_TIMEOUT_S = 5.0
# Without MQTT 5 flow control (3.1.1 brokers) this caps what we hold in memory:
# past it the network thread waits, and TCP pushes back on the broker.
_SOFT_QUEUE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ConfigurationError(f"not an MQTT URL: {url!r} (want mqtt://[user:pass@]host:port)")
    return BrokerAddress(parts.hostname, parts.port or 1883, parts.username, parts.password)


class InboundMessage(NamedTuple):
    """One received message. A tuple: made for every message, on paho's thread."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    received_at: float  # epoch seconds
    generation: int  # which connection delivered it; acks must match


def _probe_v5(address: BrokerAddress) -> bool:
    """True when the broker accepts an MQTT 5 CONNECT; False when it refuses the version."""
    outcome: dict[str, bool] = {}
    done = threading.Event()

    def on_connect(
        _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        # "Unsupported protocol version" (0x84), or 3.1.1's return code 1 as paho maps it;
        # any other answer, "not authorised" included, is an MQTT 5 broker talking.
        outcome["v5"] = reason.value not in (0x84, 1)
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, _r: ReasonCode, _p: Any) -> None:
        outcome.setdefault("v5", False)
        done.set()

    probe = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"sc-probe-{secrets.token_hex(4)}",
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    # No credentials: a refusal for auth still proves the broker speaks MQTT 5, and
    # amqtt hangs on an MQTT 5 CONNECT that carries a user name instead of refusing it.
    probe.on_connect = on_connect
    probe.on_disconnect = on_disconnect
    try:
        probe.connect(address.host, address.port, keepalive=10)
    except OSError as exc:
        raise ServiceUnavailable("mqtt", f"{address.host}:{address.port}: {exc}") from exc
    probe.loop_start()
    try:
        if not done.wait(_PROBE_TIMEOUT_S):
            return False
        return outcome["v5"]
    finally:
        probe.disconnect()
        probe.loop_stop()


class MqttBridge:
    """Persistent QoS 1 subscription that delivers into ``self.inbox``."""

    def __init__(
        self,
        *,
        url: str,
        settings: GatewaySettings,
        client_id: str | None = None,
        extra_filters: Sequence[str] = (),
    ) -> None:
        self.address = parse_mqtt_url(url)
        self.settings = settings
        # Besides topic_filter: the topics decoder profiles own (Alink, vendor JSON).
        self.filters = [settings.topic_filter, *extra_filters]
        self.client_id = client_id or settings.client_id
        self.inbox: queue.SimpleQueue[InboundMessage] = queue.SimpleQueue()
        self.connected = threading.Event()
        self.protocol = MQTTProtocolVersion.MQTTv5
        self.reconnects = 0
        self.last_error: str | None = None
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._client: mqtt.Client | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        if self.settings.protocol == "auto":
            v5 = _probe_v5(self.address)
        else:
            v5 = self.settings.protocol == "5"
        self.protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
        _LOG.info(
            "broker %s:%s speaks %s",
            self.address.host,
            self.address.port,
            "MQTT 5" if v5 else "MQTT 3.1.1",
        )
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            # MQTT 3.1.1 persistent session; MQTT 5 uses clean_start below instead.
            clean_session=None if v5 else False,
            protocol=self.protocol,
            manual_ack=True,
        )
        if self.address.username:
            client.username_pw_set(self.address.username, self.address.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        # paho's matcher is private; left alone should a future paho rename it (the
        # version range in pyproject.toml keeps it where it is).
        if type(getattr(client, "_on_message_filtered", None)) is MQTTMatcher:
            client._on_message_filtered = _NoFilterMatcher()  # type: ignore[no-untyped-call]
        client.reconnect_delay_set(
            min_delay=max(1, round(self.settings.reconnect_min_s)),
            max_delay=max(1, round(self.settings.reconnect_max_s)),
        )
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.settings.session_expiry_s
            properties.ReceiveMaximum = self.settings.receive_maximum
        self._client = client
        client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        client.loop_start()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with self._ack_lock:
            self._generation += 1  # nothing acked from here on
        client.disconnect()
        client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def network_alive(self) -> bool:
        """paho's network thread runs; an exception in a callback would end it silently."""
        client = self._client
        thread = getattr(client, "_thread", None) if client is not None else None
        return client is None or (thread is not None and thread.is_alive())

    # -- paho callbacks (network thread: hand off only) -------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused connection: {reason}"
            _LOG.error("broker refused connection: %s", reason)
            return
        with self._ack_lock:
            self._generation += 1
        # Re-subscribing each time is harmless with a kept session and needed without one.
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.filters])
        else:
            client.subscribe([(f, 1) for f in self.filters])
        self.last_error = None
        _LOG.info("connected (session present: %s)", flags.session_present)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            self.last_error = f"subscription refused: {failed[0]}"
            _LOG.error("subscription to %s refused: %s", self.filters, failed[0])
            return
        # Connected means subscribed: only now can a test or a caller rely on delivery.
        self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._ack_lock:
            self._generation += 1
        self.connected.clear()
        if self._client is None:
            return  # our own stop()
        self.reconnects += 1
        self.last_error = f"disconnected: {reason}"
        # paho backs off exponentially but in lock-step; jitter spreads a fleet of
        # workers reconnecting to a restarted broker.
        low = self.settings.reconnect_min_s
        jittered = random.uniform(low, 2 * low)  # noqa: S311 - jitter, not a secret
        client.reconnect_delay_set(
            min_delay=max(1, round(jittered)),
            max_delay=max(1, round(self.settings.reconnect_max_s)),
        )
        _LOG.warning("disconnected from broker (%s); paho reconnects", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.inbox.qsize() > _SOFT_QUEUE_LIMIT:
            while self.inbox.qsize() > _SOFT_QUEUE_LIMIT // 2 and self._client is not None:
                time.sleep(0.01)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # MQTT requires UTF-8 topics and Mosquitto enforces it; another broker might
            # not, and an exception here would end paho's network thread. The topic
            # grammar refuses the replacement characters: a bad_topic dead letter.
            topic = msg._topic.decode("utf-8", "replace")
        self.inbox.put(
            InboundMessage(
                topic, bytes(msg.payload), msg.qos, msg.mid, time.time(), self._generation
            )
        )

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Publish on the pipeline's own connection (answers to devices); False when
        not connected now (the device's retry brings the message, and its answer, back)."""
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        return client.publish(topic, payload, qos=qos).rc == mqtt.MQTT_ERR_SUCCESS

    # -- acknowledgement (pipeline thread) --------------------------------

    def ack(self, messages: Iterable[InboundMessage]) -> int:
        """Acknowledge committed messages of the current connection; return how many."""
        client = self._client
        if client is None:
            return 0
        with self._ack_lock:
            generation = self._generation
            current = [m for m in messages if m.qos > 0 and m.generation == generation]
            puback = [m.mid for m in current if m.qos == 1]
            if puback and _queue_packet is not None:
                # One write for the whole batch: paho's ack() queues a packet and wakes
                # its network thread once per message, which costs more than the rest
                # of our per-message work. A PUBACK is 4 bytes, the same in 3.1.1 and 5.
                packets = b"".join(_PUBACK.pack(0x40, 2, mid) for mid in puback)
                _queue_packet(client, PUBACK, packets, 0, 0)
                rest = [m for m in current if m.qos != 1]
            else:
                rest = current
            for message in rest:
                client.ack(message.mid, message.qos)
        return len(current)
