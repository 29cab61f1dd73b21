"""Mosquitto's password_file and acl_file, rendered from the registry.

Each device logs in as itself (username = device id) and may publish only below
``community/{community}/{class}/{id}/`` and subscribe only to its own command
topic. Service accounts get what their process needs: the pipeline reads every
device topic and publishes alerts; the API reads alerts. Decommissioned devices
and devices without credentials are left out, so they cannot log in at all.
Devices of a class that an Alink product or a vendor JSON profile names also
get that profile's topics, with their own device name pinned in them.

Client ids are bound to user names on every listener (``render_listener_conf``:
``use_username_as_clientid``), so nobody can take another's id, the pipeline's
included. The pipeline runs two MQTT clients (the manually-acked subscriber and the
alert publisher), so each pipeline account ``N`` comes with a companion ``N-alerts``
(same password) that may only publish alerts.

Pure: ``smartcommunity broker export`` does the reading and the writing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from core.alink import alink_filter, device_post_filter, device_reply_filter, reply_topic
from core.dispatch_contract import control_room_topic, dispatch_topic
from core.dispatch_contract import reply_topic as dispatch_reply_topic
from core.profiles import AlinkProduct, JsonProfile
from core.topics import ALL_DEVICE_TOPICS, ROOT, device_filter, valid_id

__all__ = [
    "ALERTS_SUFFIX",
    "COMMAND_CHANNEL",
    "INCIDENTS_SUFFIX",
    "BrokerDevice",
    "BrokerResponder",
    "ForeignTopics",
    "Listener",
    "ServiceAccount",
    "ServiceRole",
    "alerts_username",
    "command_topic",
    "foreign_topics",
    "incidents_username",
    "render_acl_file",
    "render_listener_conf",
    "render_password_file",
    "service_grants",
    "usable_username",
    "with_companions",
]

# Commands to a device go to community/{c}/{class}/{id}/cmd; the device subscribes there.
COMMAND_CHANNEL = "cmd"
# Stands for a device's id in foreign topic patterns; ids cannot contain braces.
DEVICE_PLACEHOLDER = "{device}"
# The pipeline's alert publisher logs in as its account's name plus this.
ALERTS_SUFFIX = "-alerts"
INCIDENTS_SUFFIX = "-incidents"


class ServiceRole(StrEnum):
    PIPELINE = "pipeline"  # gateway + ingest + alerts: `smartcommunity run`
    API = "api"  # the HTTP API: live alerts
    ALERTS = "alerts"  # the pipeline's alert publisher (a companion, never stored)
    INCIDENTS = "incidents"  # the pipeline's incident desk (a companion, never stored)


@dataclass(frozen=True, slots=True)
class BrokerDevice:
    device_id: str
    community_id: str
    device_class: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class BrokerResponder:
    """A responder's app or pager: reads their dispatches, writes their replies."""

    username: str
    community_id: str
    responder_id: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    username: str
    role: ServiceRole
    password_hash: str


def command_topic(community_id: str, device_class: str, device_id: str) -> str:
    return f"{ROOT}/{community_id}/{device_class}/{device_id}/{COMMAND_CHANNEL}"


def service_grants(role: ServiceRole) -> list[tuple[str, str]]:
    """(access, topic filter) pairs a service account gets."""
    alerts = f"{ROOT}/+/alerts/#"
    # The incident desk pushes dispatches and reads responders' replies: as the companion
    # when client ids are bound, else under the pipeline's own account.
    # It also pushes escalations to the street's control room, which the API reads.
    desk = [
        ("write", dispatch_topic("+", "+")),
        ("read", dispatch_reply_topic("+", "+")),
        ("write", control_room_topic("+")),
    ]
    if role is ServiceRole.PIPELINE:
        return [("read", ALL_DEVICE_TOPICS), ("write", alerts), *desk]
    if role is ServiceRole.ALERTS:
        return [("write", alerts)]
    if role is ServiceRole.INCIDENTS:
        return desk
    return [("read", alerts), ("read", control_room_topic("+"))]


def alerts_username(username: str) -> str:
    """The name the alert publisher of the pipeline logged in as ``username`` uses."""
    return username + ALERTS_SUFFIX


def incidents_username(username: str) -> str:
    """The name the incident desk of the pipeline logged in as ``username`` uses."""
    return username + INCIDENTS_SUFFIX


def with_companions(accounts: Iterable[ServiceAccount]) -> list[ServiceAccount]:
    """The accounts, each pipeline account followed by its alert publisher's and its
    incident desk's (each an MQTT client of its own, so a user name of its own)."""
    out: list[ServiceAccount] = []
    for account in accounts:
        out.append(account)
        if account.role is ServiceRole.PIPELINE:
            name = alerts_username(account.username)
            out.append(ServiceAccount(name, ServiceRole.ALERTS, account.password_hash))
            desk = incidents_username(account.username)
            out.append(ServiceAccount(desk, ServiceRole.INCIDENTS, account.password_hash))
    return out


def usable_username(name: str) -> bool:
    """Mosquitto splits password_file lines at the first ':' and ACL lines at spaces."""
    return valid_id(name) and ":" not in name


def render_password_file(
    devices: Iterable[BrokerDevice],
    accounts: Iterable[ServiceAccount],
    responders: Iterable[BrokerResponder] = (),
) -> str:
    lines = [f"{a.username}:{a.password_hash}" for a in with_companions(accounts)]
    lines += [f"{d.device_id}:{d.password_hash}" for d in devices]
    lines += [f"{r.username}:{r.password_hash}" for r in responders]
    return "\n".join(lines) + "\n" if lines else ""


@dataclass(frozen=True, slots=True)
class ForeignTopics:
    """Topics outside the native grammar that decoder profiles own (docs/decoders.md).

    ``device``: per device class, (access, filter) with ``{device}`` standing for the
    device's id, so each device gets its own topics only; ``pipeline``: what the
    pipeline's account reads (the posts) and writes (Alink's answers)."""

    device: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    pipeline: tuple[tuple[str, str], ...] = ()

    def for_device(self, device: BrokerDevice) -> list[tuple[str, str]]:
        return [
            (access, pattern.replace(DEVICE_PLACEHOLDER, device.device_id))
            for access, pattern in self.device.get(device.device_class, ())
        ]


def foreign_topics(
    products: Iterable[AlinkProduct], profiles: Iterable[JsonProfile]
) -> ForeignTopics:
    """An Alink device publishes its own posts under its product key and reads its
    answers; a vendor device publishes its own topic (its ``{device}`` level pinned)."""
    device: dict[str, list[tuple[str, str]]] = {}
    pipeline: list[tuple[str, str]] = []
    for product in products:
        device.setdefault(product.device_class, []).extend(
            [
                ("write", device_post_filter(product.product_key, DEVICE_PLACEHOLDER)),
                ("read", device_reply_filter(product.product_key, DEVICE_PLACEHOLDER)),
            ]
        )
        pipeline += [
            ("read", alink_filter(product.product_key)),
            ("write", reply_topic(alink_filter(product.product_key))),
        ]
    for profile in profiles:
        device.setdefault(profile.device_class, []).append(
            ("write", profile.topic.for_device(DEVICE_PLACEHOLDER))
        )
        pipeline.append(("read", profile.topic.mqtt_filter))
    return ForeignTopics({k: tuple(v) for k, v in device.items()}, tuple(pipeline))


def _acl_user(username: str, grants: Iterable[tuple[str, str]]) -> list[str]:
    """One user's block of the acl_file: its name, its (access, topic filter) grants."""
    return [f"user {username}", *(f"topic {access} {topic}" for access, topic in grants), ""]


def render_acl_file(
    devices: Sequence[BrokerDevice],
    accounts: Sequence[ServiceAccount],
    *,
    generated_at: datetime,
    foreign: ForeignTopics | None = None,
    responders: Sequence[BrokerResponder] = (),
) -> str:
    out = [
        f"# Written by `smartcommunity broker export` at {generated_at.isoformat()}:",
        "# edits are lost at the next export. Anything not granted here is denied.",
        "",
        "# Service accounts",
    ]
    for account in with_companions(accounts):
        grants = list(service_grants(account.role))
        if foreign is not None and account.role is ServiceRole.PIPELINE:
            grants += foreign.pipeline
        out += _acl_user(account.username, grants)
    out.append(f"# Devices ({len(devices)}): publish below their own topics, read their commands")
    for d in devices:
        grants = [
            ("write", device_filter(d.community_id, d.device_class, d.device_id)),
            ("read", command_topic(d.community_id, d.device_class, d.device_id)),
        ]
        if foreign is not None:
            grants += foreign.for_device(d)
        out += _acl_user(d.device_id, grants)
    out.append(f"# Responders ({len(responders)}): their own dispatches and replies only")
    for r in responders:
        out += _acl_user(
            r.username,
            [
                ("read", dispatch_topic(r.community_id, r.responder_id)),
                ("write", dispatch_reply_topic(r.community_id, r.responder_id)),
            ],
        )
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class Listener:
    """Where Mosquitto listens: ``host`` None means every interface."""

    port: int
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> Listener:
        """``PORT`` or ``HOST:PORT``."""
        host, _, port = text.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65_536:
            raise ValueError(f"{text!r}: give PORT or HOST:PORT")
        return cls(int(port), host or None)

    def line(self) -> str:
        return f"listener {self.port}" + (f" {self.host}" if self.host else "")


def render_listener_conf(
    *,
    password_file: str,
    acl_file: str,
    pipeline: Listener,
    devices: Listener,
    tls_dir: str | None,
    generated_at: datetime,
) -> str:
    """Mosquitto listeners that take only the exported users and bind each client's id
    to its user name on both the pipeline's (loopback) and the devices' listener:
    a client that sends another's id connects as itself, and the other stays
    connected. ``tls_dir`` (ca.crt, server.crt, server.key) secures the devices'
    listener; None leaves it plain, for a closed network or a test only."""
    out = [
        f"# Written by `smartcommunity broker export` at {generated_at.isoformat()}:",
        "# include it from mosquitto.conf (include_dir); edits are lost at the next export.",
        "# Security options apply to every listener alike.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "",
        "# The pipeline and the services on this machine.",
        pipeline.line(),
        "use_username_as_clientid true",
        "",
        "# Devices.",
        devices.line(),
        "use_username_as_clientid true",
    ]
    if tls_dir is not None:
        out += [
            f"cafile {tls_dir}/ca.crt",
            f"certfile {tls_dir}/server.crt",
            f"keyfile {tls_dir}/server.key",
            "tls_version tlsv1.2",
        ]
    return "\n".join(out) + "\n"
