"""Connecting a simulator to the broker: the URL, MQTT 5 with a 3.1.1 fallback, the Will.

The embedded amqtt broker speaks only MQTT 3.1.1, Mosquitto both:
``protocol="auto"`` asks the broker first (``negotiate_protocol``) and then
connects with MQTT 5 where it can.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import ConfigurationError, ServiceUnavailable

__all__ = ["BrokerAddress", "Protocol", "Will", "connect_client", "negotiate_protocol"]

log = logging.getLogger(__name__)

Protocol = Literal["auto", "5", "3.1.1"]
DEFAULT_PORT = 1883
# Long enough for a loaded broker on another host, short enough to fail a demo fast.
CONNECT_TIMEOUT_S = 10.0
# Paho pings at this period when idle; the broker declares us dead after 1.5x.
KEEPALIVE_S = 30
# Paho's own default window of unacknowledged QoS 1 messages.
PAHO_DEFAULT_INFLIGHT = 20
# CONNACK codes that mean "not this protocol version" (5: 0x84; 3.1.1's 1 maps to it).
_UNSUPPORTED_VERSION = 0x84
# CONNACK codes that a retry will not fix: bad credentials or not allowed.
_AUTH_FAILURES = frozenset({0x86, 0x87, 0x8C})
# Not a reason code: the broker closed the connection without a CONNACK, which
# MQTT 3.1.1 allows for a protocol level it does not support.
_DROPPED = -1
_VERSIONS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAddress:
    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://[user:password@]host[:port]`` (``tcp://`` accepted too)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError(
                f"MQTT URL must look like mqtt://[user:password@]host:port, not {url!r}"
            )
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"bad port in MQTT URL: {exc}") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


def connect_client(
    address: BrokerAddress,
    *,
    client_id: str,
    will: Will | None = None,
    protocol: Protocol = "auto",
    timeout_s: float = CONNECT_TIMEOUT_S,
    max_inflight: int = PAHO_DEFAULT_INFLIGHT,
) -> mqtt.Client:
    """A connected client with its network loop running (``loop_start``).

    Raises ServiceUnavailable when the broker cannot be reached or refuses us
    for a reason a retry may fix, ConfigurationError when it rejects our credentials.
    """
    if protocol == "auto":
        protocol = negotiate_protocol(address, client_id=client_id, timeout_s=timeout_s)
    version = _VERSIONS[protocol]
    client = _new_client(address, client_id=client_id, version=version, will=will)
    client.max_inflight_messages_set(max_inflight)  # paho refuses to change it once connected
    refusal = _handshake(client, address, timeout_s)
    if refusal is not None:
        raise _refused(client_id, refusal)
    log.debug("connected to %s:%s as %s (MQTT %s)", address.host, address.port, client_id, protocol)
    return client


def negotiate_protocol(
    address: BrokerAddress, *, client_id: str, timeout_s: float = CONNECT_TIMEOUT_S
) -> Protocol:
    """Whether the broker speaks MQTT 5 ("5") or only 3.1.1 ("3.1.1").

    The probe is a bare MQTT 5 CONNECT: no credentials, no Will. amqtt parses an
    MQTT 5 CONNECT as 3.1.1, so a user name or a Will in it leaves amqtt waiting
    for bytes that never come, where the bare one gets a prompt refusal. Any
    other answer in MQTT 5 form, "not authorised" included, means MQTT 5.
    """
    client = _new_client(
        address, client_id=client_id, version=_VERSIONS["5"], will=None, anonymous=True
    )
    refusal = _handshake(client, address, timeout_s)
    if refusal is None:
        _abandon(client)
    if refusal in (_UNSUPPORTED_VERSION, _DROPPED):
        log.info("broker at %s:%s speaks MQTT 3.1.1 only", address.host, address.port)
        return "3.1.1"
    return "5"


def _new_client(
    address: BrokerAddress,
    *,
    client_id: str,
    version: MQTTProtocolVersion,
    will: Will | None,
    anonymous: bool = False,
) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version
    )
    if address.username is not None and not anonymous:
        client.username_pw_set(address.username, address.password)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
    return client


def _refused(client_id: str, reason: int) -> Exception:
    if reason == _DROPPED:
        return ServiceUnavailable("mqtt", f"broker closed the connection of {client_id}")
    if reason in _AUTH_FAILURES:
        return ConfigurationError(f"MQTT broker refused {client_id}: reason code {reason:#x}")
    return ServiceUnavailable("mqtt", f"broker refused {client_id}: reason code {reason:#x}")


def _handshake(client: mqtt.Client, address: BrokerAddress, timeout_s: float) -> int | None:
    """Connect and wait for CONNACK: None on success, else the refusal's reason code."""
    done = threading.Event()
    outcome: list[int] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        outcome.append(reason.value)
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if not done.is_set():
            outcome.append(_DROPPED)
            done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(address.host, address.port, keepalive=KEEPALIVE_S)
    except OSError as exc:
        raise ServiceUnavailable("mqtt", f"{address.host}:{address.port}: {exc}") from exc
    client.loop_start()
    if not done.wait(timeout_s):
        _abandon(client)
        raise ServiceUnavailable("mqtt", f"no CONNACK from {address.host}:{address.port}")
    if outcome[0] == 0:
        client.on_connect = _on_reconnect
        client.on_disconnect = _on_connection_lost
        return None
    _abandon(client)
    return outcome[0]


def _abandon(client: mqtt.Client) -> None:
    # disconnect() stops paho's automatic reconnection before the thread is joined.
    client.disconnect()
    client.loop_stop()


def _on_reconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
    log.info("reconnected to the broker: %s", reason)


def _on_connection_lost(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
    if reason.value != 0:
        log.warning("connection to the broker lost (%s); paho reconnects and resends", reason)
