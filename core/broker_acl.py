"""Mosquitto's password_file and acl_file, rendered from the registry.

Each device logs in as itself (username = device id) and may publish only below
``community/{community}/{class}/{id}/`` and subscribe only to its own command
topic. Service accounts get what their process needs: the pipeline reads every
device topic and publishes alerts; the API reads alerts. Decommissioned devices
and devices without credentials are left out, so they cannot log in at all.

Pure: ``smartcommunity broker export`` does the reading and the writing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from core.topics import ALL_DEVICE_TOPICS, ROOT, device_filter, valid_id

__all__ = [
    "COMMAND_CHANNEL",
    "BrokerDevice",
    "ServiceAccount",
    "ServiceRole",
    "command_topic",
    "render_acl_file",
    "render_password_file",
    "service_grants",
    "usable_username",
]

# Commands to a device go to community/{c}/{class}/{id}/cmd; the device subscribes there.
COMMAND_CHANNEL = "cmd"


class ServiceRole(StrEnum):
    PIPELINE = "pipeline"  # gateway + ingest + alerts: `smartcommunity run`
    API = "api"  # the HTTP API: live alerts


@dataclass(frozen=True, slots=True)
class BrokerDevice:
    device_id: str
    community_id: str
    device_class: str
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
    if role is ServiceRole.PIPELINE:
        return [("read", ALL_DEVICE_TOPICS), ("write", alerts)]
    return [("read", alerts)]


def usable_username(name: str) -> bool:
    """Mosquitto splits password_file lines at the first ':' and ACL lines at spaces."""
    return valid_id(name) and ":" not in name


def render_password_file(
    devices: Iterable[BrokerDevice], accounts: Iterable[ServiceAccount]
) -> str:
    lines = [f"{a.username}:{a.password_hash}" for a in accounts]
    lines += [f"{d.device_id}:{d.password_hash}" for d in devices]
    return "\n".join(lines) + "\n" if lines else ""


def render_acl_file(
    devices: Sequence[BrokerDevice],
    accounts: Sequence[ServiceAccount],
    *,
    generated_at: datetime,
) -> str:
    out = [
        f"# Written by `smartcommunity broker export` at {generated_at.isoformat()}:",
        "# edits are lost at the next export. Anything not granted here is denied.",
        "",
        "# Service accounts",
    ]
    for account in accounts:
        out.append(f"user {account.username}")
        out += [f"topic {access} {topic}" for access, topic in service_grants(account.role)]
        out.append("")
    out.append(f"# Devices ({len(devices)}): publish below their own topics, read their commands")
    for d in devices:
        out += [
            f"user {d.device_id}",
            f"topic write {device_filter(d.community_id, d.device_class, d.device_id)}",
            f"topic read {command_topic(d.community_id, d.device_class, d.device_id)}",
            "",
        ]
    return "\n".join(out) + "\n"
