"""Write Mosquitto's password_file and acl_file from the registry, and make it reload them.

With a listener file, also the listeners that use them, binding every client's id to
its user name (``core.broker_acl.render_listener_conf``).

Both files are written next to their final name and renamed over it, so a broker
reloading at that moment reads the old file or the new one, never half of one.
Mosquitto 2.0 re-reads both on SIGHUP and applies them to clients already
connected: a device decommissioned or rotated is disconnected at the reload.

What it reads and the service accounts it keeps go through ``store.mqtt_accounts``.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from core.broker_acl import (
    BrokerDevice,
    BrokerResponder,
    ForeignTopics,
    Listener,
    ServiceAccount,
    ServiceRole,
    render_acl_file,
    render_listener_conf,
    render_password_file,
    usable_username,
    with_companions,
)
from core.errors import SmartCommunityError
from store import mqtt_accounts

__all__ = [
    "DEVICE_LISTENER",
    "PIPELINE_LISTENER",
    "TLS_DIR",
    "ExportSummary",
    "ListenerPlan",
    "MqttAccountError",
    "add_account",
    "export_broker_files",
    "list_accounts",
    "load_broker_users",
    "reload_mosquitto",
    "remove_account",
    "write_atomically",
]

_LOG = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]
# Readable by the broker's group, not by everyone: the hashes are slow to attack,
# not impossible. Mosquitto 2.1 refuses world-readable password files.
FILE_MODE = 0o640
# As deploy/mosquitto/mosquitto.conf: plain MQTT on loopback for the pipeline, TLS for devices.
PIPELINE_LISTENER = Listener(1883, "127.0.0.1")
DEVICE_LISTENER = Listener(8883)
TLS_DIR = Path("/etc/mosquitto/certs")


class MqttAccountError(SmartCommunityError):
    pass


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """The listener file to write, and its listeners (deploy/mosquitto/mosquitto.conf)."""

    path: Path
    pipeline: Listener = PIPELINE_LISTENER
    devices: Listener = DEVICE_LISTENER
    tls_dir: Path | None = TLS_DIR


@dataclass(frozen=True, slots=True)
class ExportSummary:
    devices: int
    accounts: int
    skipped_decommissioned: int
    skipped_no_credentials: int
    skipped_bad_username: list[str]
    password_file: Path
    acl_file: Path
    listener_file: Path | None = None


def load_broker_users(
    conn: Conn,
) -> tuple[list[BrokerDevice], list[ServiceAccount], dict[str, int], list[str]]:
    """Devices and accounts that may log in, counts of the devices left out and why,
    and the ids that cannot be Mosquitto user names."""
    devices: list[BrokerDevice] = []
    skipped = {"decommissioned": 0, "no_credentials": 0}
    bad: list[str] = []
    rows = mqtt_accounts.device_login_rows(conn)
    for device_id, community, device_class, state, password_hash in rows:
        if state == "decommissioned":
            skipped["decommissioned"] += 1
        elif password_hash is None:
            skipped["no_credentials"] += 1
        elif not usable_username(device_id):
            bad.append(device_id)
        else:
            devices.append(BrokerDevice(device_id, community, device_class, password_hash))
    accounts = [
        ServiceAccount(username, ServiceRole(role), password_hash)
        for username, role, password_hash in mqtt_accounts.account_rows(conn)
    ]
    return devices, accounts, skipped, bad


def load_broker_responders(conn: Conn) -> list[BrokerResponder]:
    """Responders with an MQTT login (``smartcommunity responders credentials``)."""
    rows = mqtt_accounts.responder_login_rows(conn)
    return [
        BrokerResponder(username, community, responder, password_hash)
        for username, community, responder, password_hash in rows
        if usable_username(username)
    ]


def write_atomically(path: Path, text: str, mode: int = FILE_MODE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def export_broker_files(
    conn: Conn,
    password_file: Path,
    acl_file: Path,
    foreign: ForeignTopics | None = None,
    listeners: ListenerPlan | None = None,
) -> ExportSummary:
    """Write both files from one consistent read of the registry (and the listener
    file that uses them)."""
    with mqtt_accounts.consistent_read(conn):
        devices, accounts, skipped, bad = load_broker_users(conn)
        responders = load_broker_responders(conn)
    names = {d.device_id for d in devices} | {r.username for r in responders}
    clash = sorted(names.intersection(a.username for a in with_companions(accounts)))
    if clash:
        raise MqttAccountError(
            f"{clash[0]!r} is both a device and a service account: remove the account"
        )
    for device_id in bad:
        _LOG.warning(
            "device %r cannot log in: its id is not a valid Mosquitto user name", device_id
        )
    now = datetime.now(UTC)
    write_atomically(password_file, render_password_file(devices, accounts, responders))
    write_atomically(
        acl_file,
        render_acl_file(
            devices, accounts, generated_at=now, foreign=foreign, responders=responders
        ),
    )
    if listeners is not None:
        conf = render_listener_conf(
            password_file=str(password_file.absolute()),
            acl_file=str(acl_file.absolute()),
            pipeline=listeners.pipeline,
            devices=listeners.devices,
            tls_dir=None if listeners.tls_dir is None else str(listeners.tls_dir.absolute()),
            generated_at=now,
        )
        write_atomically(listeners.path, conf)
    return ExportSummary(
        devices=len(devices),
        accounts=len(accounts),
        skipped_decommissioned=skipped["decommissioned"],
        skipped_no_credentials=skipped["no_credentials"],
        skipped_bad_username=bad,
        password_file=password_file,
        acl_file=acl_file,
        listener_file=None if listeners is None else listeners.path,
    )


def reload_mosquitto(pid: int) -> None:
    """SIGHUP: Mosquitto re-reads password_file and acl_file and re-checks its clients."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise MqttAccountError(f"no process {pid} to reload") from None
    except PermissionError:
        raise MqttAccountError(
            f"not allowed to signal process {pid}: run as the broker's user or root"
        ) from None


def add_account(conn: Conn, username: str, role: ServiceRole, password_hash: str) -> None:
    if not usable_username(username):
        raise MqttAccountError(
            f"{username!r}: use letters, digits, '_', '.' or '-' (no ':'), up to 64"
        )
    if not mqtt_accounts.save_account(conn, username, role.value, password_hash):
        raise MqttAccountError(f"{username!r} is a device id")


def remove_account(conn: Conn, username: str) -> bool:
    return mqtt_accounts.delete_account(conn, username)


def list_accounts(conn: Conn) -> list[tuple[str, str, datetime, datetime | None]]:
    return mqtt_accounts.list_accounts(conn)
