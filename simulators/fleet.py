"""The simulated fleet: each device's model, topics, counters, connection and payloads.

A Will belongs to one connection, so a Will per device needs a connection per
device, as real devices have: ``per_device=True``, for fleets of up to
PER_DEVICE_CONNECTIONS_MAX per process (the default up to PER_DEVICE_AUTO_MAX).
Otherwise one connection carries every device, and its Will is the
simulator's own, on ``simulators/{client_id}/status`` (outside ``community/``,
where the pipeline never sees it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.client import CallbackOnPublish

from core.models import Device
from core.topics import Channel, device_topic
from simulators.connection import BrokerAddress, Protocol, Will, connect_client, negotiate_protocol
from simulators.credentials import DeviceCredentials, address_for
from simulators.model import DeviceModel, Metrics, SimEvent

__all__ = [
    "GOODBYE",
    "OFFLINE",
    "ONLINE",
    "PER_DEVICE_AUTO_MAX",
    "PER_DEVICE_CONNECTIONS_MAX",
    "Member",
    "close_clients",
    "connect_fleet",
    "event_payload",
    "telemetry_payload",
]

ONLINE = orjson.dumps({"online": True})
OFFLINE = orjson.dumps({"online": False})  # the Last Will: the link was lost
GOODBYE = orjson.dumps({"online": False, "clean": True})  # a deliberate disconnect
# Each connection costs a paho network thread and a socket; past this, run
# several simulator processes instead.
PER_DEVICE_CONNECTIONS_MAX = 200
# Fleets up to this size get a connection (and a Last Will) per device unless
# told otherwise: a demo community behaves like real devices.
PER_DEVICE_AUTO_MAX = 50


def telemetry_payload(*, ts_ms: int, seq: int, metrics: Metrics) -> bytes:
    """The native telemetry envelope (ARCHITECTURE.md, the device contract)."""
    return orjson.dumps({"ts": ts_ms, "seq": seq, "metrics": metrics})


def event_payload(*, ts_ms: int, seq: int, event: SimEvent) -> bytes:
    """The native event envelope."""
    return orjson.dumps({"ts": ts_ms, "seq": seq, "event": event.name, "data": event.data})


class Member:
    """One simulated device and where it publishes."""

    __slots__ = (
        "client",
        "device",
        "event_topic",
        "last_ms",
        "model",
        "seq",
        "status_topic",
        "telemetry_topic",
    )

    def __init__(self, *, device: Device, model: DeviceModel) -> None:
        self.device = device
        self.model = model
        where = (device.community_id, device.device_class, device.id)
        self.telemetry_topic = device_topic(*where, Channel.TELEMETRY)
        self.event_topic = device_topic(*where, Channel.EVENT)
        self.status_topic = device_topic(*where, Channel.STATUS)
        self.client: mqtt.Client | None = None
        # Per-device counter shared by telemetry and events; the Simulator sets its start.
        self.seq = 0
        # Last timestamp sent, epoch ms; timestamps stay strictly increasing per device.
        self.last_ms = 0


def connect_fleet(
    members: Sequence[Member],
    *,
    address: BrokerAddress,
    client_id: str,
    protocol: Protocol,
    per_device: bool,
    max_inflight: int,
    on_publish: CallbackOnPublish,
    credentials: Mapping[str, DeviceCredentials] | None = None,
) -> list[mqtt.Client]:
    """Connect, assign each member its client, and return the clients opened.

    With per-device connections a device that has ``credentials`` of its own logs
    in with them (a broker with an ACL per device), the rest with the URL's.

    On failure, clients already opened are closed before the error propagates.
    """
    if per_device and len(members) > PER_DEVICE_CONNECTIONS_MAX:
        raise ValueError(
            f"per-device connections are for at most {PER_DEVICE_CONNECTIONS_MAX} devices"
        )
    clients: list[mqtt.Client] = []
    try:
        if not per_device:
            will = Will(topic=f"simulators/{client_id}/status", payload=OFFLINE)
            client = connect_client(
                address,
                client_id=client_id,
                will=will,
                protocol=protocol,
                max_inflight=max_inflight,
            )
            client.on_publish = on_publish
            clients.append(client)
            for member in members:
                member.client = client
            return clients
        if protocol == "auto":  # negotiate once, not once per device
            protocol = negotiate_protocol(address, client_id=client_id)
        for member in members:
            # A real device connects as itself, its Will on its own status topic.
            client = connect_client(
                address_for(address, member.device.id, credentials or {}),
                client_id=member.device.id,
                will=Will(topic=member.status_topic, payload=OFFLINE),
                protocol=protocol,
                max_inflight=max_inflight,
            )
            client.on_publish = on_publish
            clients.append(client)
            member.client = client
    except BaseException:
        close_clients(clients)
        raise
    return clients


def close_clients(clients: Sequence[mqtt.Client]) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()
