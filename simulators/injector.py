"""Publishing faults to a broker (``simulators.faults`` builds them).

Ordinary faults share one connection (or, for a device with credentials of its
own, go out over the device's connection). A connection fault gets a connection
as its device, with no Last Will, whose socket is closed without an MQTT
DISCONNECT once the broker has confirmed the messages: to the broker that is a
device whose link died, and with no Will its retained status stays "online".
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from core.errors import ServiceUnavailable
from simulators.connection import (
    BrokerAddress,
    Protocol,
    Will,
    connect_client,
    negotiate_protocol,
)
from simulators.credentials import DeviceCredentials, address_for
from simulators.faults import Fault

__all__ = ["InjectionReport", "drop_connection", "inject_faults"]

log = logging.getLogger(__name__)

# A handful of messages per fault: a broker that has not confirmed them in this
# long is not going to.
CONFIRM_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectionReport:
    faults: int
    messages: int
    connections_dropped: int


def inject_faults(
    faults: Sequence[Fault],
    *,
    mqtt_url: str,
    protocol: Protocol = "auto",
    credentials: Mapping[str, DeviceCredentials] | None = None,
    client_id: str | None = None,
) -> InjectionReport:
    """Publish every fault's messages with QoS 1 and wait until the broker has them all."""
    address = BrokerAddress.parse(mqtt_url)
    creds = credentials or {}
    sender_id = client_id or f"sc-faults-{uuid.uuid4().hex[:12]}"
    if protocol == "auto":
        protocol = negotiate_protocol(address, client_id=sender_id)
    shared: mqtt.Client | None = None
    messages = dropped = 0
    try:
        for fault in faults:
            if fault.drop_connection:
                drop_connection(address_for(address, fault.device_id, creds), fault, protocol)
                dropped += 1
            elif fault.device_id in creds:
                own = connect_client(
                    address_for(address, fault.device_id, creds),
                    client_id=fault.device_id,
                    protocol=protocol,
                )
                try:
                    _publish(own, fault)
                finally:
                    own.disconnect()
                    own.loop_stop()
            else:
                if shared is None:
                    shared = connect_client(address, client_id=sender_id, protocol=protocol)
                _publish(shared, fault)
            messages += len(fault.messages)
            log.info(
                "fault %s: %d messages for %s", fault.kind, len(fault.messages), fault.device_id
            )
    finally:
        if shared is not None:
            shared.disconnect()
            shared.loop_stop()
    return InjectionReport(faults=len(faults), messages=messages, connections_dropped=dropped)


def _publish(client: mqtt.Client, fault: Fault) -> None:
    infos = [client.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in fault.messages]
    for info in infos:
        info.wait_for_publish(CONFIRM_TIMEOUT_S)
        if not info.is_published():
            raise ServiceUnavailable("mqtt", f"no PUBACK for fault {fault.kind} in time")


def drop_connection(
    address: BrokerAddress, fault: Fault, protocol: Protocol, *, will: Will | None = None
) -> None:
    """Connect as the fault's device, publish its messages, then cut the link.

    With ``will`` the broker publishes it when the link dies (the healthy case);
    without, nothing tells the platform the device is gone.
    """
    client = connect_client(address, client_id=fault.device_id, protocol=protocol, will=will)
    try:
        _publish(client, fault)
    finally:
        # Stop paho's thread first so that it cannot send DISCONNECT or reconnect,
        # then cut the TCP connection under it.
        client.loop_stop()
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
