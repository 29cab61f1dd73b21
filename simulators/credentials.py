"""Per-device MQTT credentials, for brokers that make every device log in as itself.

A production broker (deploy/mosquitto) has ``allow_anonymous false``, a
password per device and an ACL that lets a device write only below its own
topics. Simulated devices then need the same credentials a real one would get
from the installer: a CSV of ``device_id,username,password`` (username empty
means the device id). Devices without a row use the URL's credentials.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from simulators.connection import BrokerAddress

__all__ = ["DeviceCredentials", "address_for", "load_credentials", "write_credentials"]

_FIELDS = ("device_id", "username", "password")


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    username: str
    password: str = field(repr=False)


def load_credentials(path: Path) -> dict[str, DeviceCredentials]:
    """Read the CSV; a row without a password or a repeated device is an error."""
    found: dict[str, DeviceCredentials] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [
            name for name in ("device_id", "password") if name not in (reader.fieldnames or ())
        ]
        if missing:
            raise ValueError(f"{path}: needs the columns {', '.join(_FIELDS)}")
        for line, row in enumerate(reader, start=2):
            device_id = (row.get("device_id") or "").strip()
            password = row.get("password") or ""
            if not device_id or not password:
                raise ValueError(f"{path}:{line}: device_id and password are required")
            if device_id in found:
                raise ValueError(f"{path}:{line}: device {device_id!r} appears twice")
            username = (row.get("username") or "").strip() or device_id
            found[device_id] = DeviceCredentials(username=username, password=password)
    return found


def write_credentials(path: Path, passwords: Mapping[str, str]) -> None:
    """Append ``device_id,username,password`` rows (the file ``load_credentials`` reads),
    readable by the owner only: it holds the only plaintext copy of the passwords."""
    new = not path.exists()
    path.touch(mode=0o600, exist_ok=True)
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(_FIELDS)
        for device_id, password in sorted(passwords.items()):
            writer.writerow((device_id, device_id, password))


def address_for(
    address: BrokerAddress, device_id: str, credentials: Mapping[str, DeviceCredentials]
) -> BrokerAddress:
    """``address`` with the device's own credentials when it has some."""
    own = credentials.get(device_id)
    if own is None:
        return address
    return replace(address, username=own.username, password=own.password)
