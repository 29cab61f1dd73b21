"""The device registry in the database: register (one or a whole CSV), read, list,
change, move through the lifecycle, issue MQTT credentials, and register the
simulated devices of the demo, the simulators and the visit rehearsal, and the fire
devices of the GB/T 26875 bridge (UITDs and their panel points).

The writer of ``devices`` (the ingest writer's last-seen and status columns aside),
including the unlinking of a forgotten resident's wearables. What only the database
can tell about a device to register is checked by ``store.device_checks``; the
pipeline's reads of the registry and the feed of its changes are
``store.device_directory``.

Writes run in ``conn.transaction()``; the audit triggers record each change with the
session's ``sc.actor``. Passwords are returned once and stored only as Mosquitto
``$7$`` hashes (``core.passwords``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError

from core.device_csv import ParsedCsv, RowError, validation_reason
from core.fleet import FleetStatus, summarize_fleet
from core.models import Device
from core.passwords import hash_password, new_secret
from core.registry import DeviceSpec
from store import places
from store.device_checks import Problem, check_specs
from store.filters import list_filter
from store.rows import AsyncConn, Conn, first_record, records

__all__ = [
    "DeviceRecord",
    "FireDevice",
    "ImportReport",
    "Issued",
    "LifecycleError",
    "SimulatedDevice",
    "community_devices",
    "count_online",
    "decommission",
    "device_ids",
    "fleet_status",
    "get_device",
    "import_devices",
    "insert_fire_device",
    "insert_fire_device_async",
    "issue_missing_credentials",
    "last_heard",
    "list_devices",
    "register_device",
    "register_simulated",
    "rotate_credentials",
    "set_state",
    "unlink_resident",
    "update_device",
]


# --- the registry ---------------------------------------------------------------------------

# Registry columns, the place's floor, and the latest battery and signal (kept by ingest).
_DEVICE = sql.SQL(
    "SELECT d.id, d.community_id, d.device_class, d.model, d.name, d.state,"
    " d.expected_interval_s, d.created_at, d.last_seen, d.last_received_at, d.online,"
    " d.status_at, d.building, d.unit, u.floor, d.resident_id, d.installed_at,"
    " d.installed_by, d.updated_at, d.decommissioned_at,"
    " d.mqtt_password_hash IS NOT NULL AS has_credentials, d.credentials_rotated_at,"
    " b.value AS battery, r.value AS rssi"
    " FROM devices AS d"
    " LEFT JOIN units AS u"
    "   ON u.community_id = d.community_id AND u.building_id = d.building AND u.id = d.unit"
    " LEFT JOIN latest AS b ON b.device_id = d.id AND b.metric = 'battery'"
    " LEFT JOIN latest AS r ON r.device_id = d.id AND r.metric = 'rssi'"
)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: str
    community_id: str
    device_class: str
    model: str
    name: str
    state: str
    expected_interval_s: int
    created_at: datetime
    last_seen: datetime | None
    last_received_at: datetime | None
    online: bool | None
    status_at: datetime | None
    building: str | None
    unit: str | None
    floor: int | None
    resident_id: str | None
    installed_at: datetime | None
    installed_by: str | None
    updated_at: datetime
    decommissioned_at: datetime | None
    has_credentials: bool
    credentials_rotated_at: datetime | None
    battery: float | None
    rssi: float | None


@dataclass(frozen=True, slots=True)
class Issued:
    device_id: str
    password: str


@dataclass(slots=True)
class ImportReport:
    issued: list[Issued] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    buildings_created: int = 0
    units_created: int = 0
    dry_run: bool = False


class LifecycleError(Exception):
    """A transition the device's state does not allow (the API answers 409)."""


def get_device(conn: Conn, device_id: str) -> DeviceRecord | None:
    query = sql.SQL("{} WHERE d.id = %s").format(_DEVICE)
    return first_record(conn, DeviceRecord, query, (device_id,))


def list_devices(
    conn: Conn,
    *,
    within: Collection[str] | None = None,
    community_id: str | None = None,
    device_class: str | None = None,
    state: str | None = None,
    building: str | None = None,
    resident_id: str | None = None,
    after: str | None = None,
    limit: int,
) -> list[DeviceRecord]:
    """Devices by id, filtered by each argument given; ``within``: only these
    communities' (None: every community's)."""
    where, params = list_filter(
        "d",
        within=within,
        after=after,
        community_id=community_id,
        device_class=device_class,
        state=state,
        building=building,
        resident_id=resident_id,
    )
    query = sql.SQL("{} WHERE {} ORDER BY d.id LIMIT %s").format(_DEVICE, where)
    return records(conn, DeviceRecord, query, [*params, limit])


def community_devices(conn: Conn, community_id: str) -> list[DeviceRecord]:
    """The community's registered devices, decommissioned ones left out."""
    query = sql.SQL("{} WHERE d.community_id = %s AND d.state <> 'decommissioned'").format(_DEVICE)
    return records(conn, DeviceRecord, query, (community_id,))


def fleet_status(conn: Conn, community_id: str, now: datetime, limit: int) -> FleetStatus:
    """The community's fleet at ``now`` (``core.fleet``), at most ``limit`` devices listed."""
    return summarize_fleet(community_id, community_devices(conn, community_id), now, limit)


# --- writing ------------------------------------------------------------------------------

_INSERT = (
    "INSERT INTO devices (id, community_id, device_class, model, name, expected_interval_s,"
    " building, unit, resident_id, installed_at, installed_by, mqtt_password_hash,"
    " credentials_rotated_at)"
    " SELECT i, c, k, m, n, e, b, u, r, coalesce(t, now()), %s, h, now()"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[],"
    " %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[])"
    " AS v(i, c, k, m, n, e, b, u, r, t, h)"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)


def _create_locations(conn: Conn, specs: Sequence[DeviceSpec]) -> tuple[int, int]:
    buildings = {(s.community_id, s.building) for s in specs if s.building}
    units = {(s.community_id, s.building, s.unit): s.floor for s in specs if s.building and s.unit}
    return places.create_missing(conn, buildings, units)


def _insert(conn: Conn, specs: Sequence[DeviceSpec], installed_by: str) -> list[Issued]:
    """Insert the devices; return what was issued. Ids taken meanwhile are left out."""
    issued = [Issued(s.id, new_secret()) for s in specs]
    columns: list[list[Any]] = [[] for _ in range(11)]
    for spec, given in zip(specs, issued, strict=True):
        values = (
            spec.id,
            spec.community_id,
            spec.device_class,
            spec.model,
            spec.name,
            spec.expected_interval_s,
            spec.building,
            spec.unit,
            spec.resident_id,
            spec.installed_at,
            hash_password(given.password),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    inserted = {r[0] for r in conn.execute(_INSERT, (installed_by, *columns))}
    return [i for i in issued if i.device_id in inserted]


def import_devices(
    conn: Conn,
    parsed: ParsedCsv,
    *,
    visible: Callable[[str], bool],
    installed_by: str,
    skip_invalid: bool = False,
    dry_run: bool = False,
    create_locations: bool = True,
) -> ImportReport:
    """All rows or none (unless ``skip_invalid``): every problem is reported with its line."""
    specs = [row.spec for row in parsed.rows]
    problems = check_specs(conn, specs, visible=visible, create_locations=create_locations)
    report = ImportReport(errors=list(parsed.errors), dry_run=dry_run)
    for index, problem in problems.items():
        row = parsed.rows[index]
        report.errors.append(RowError(row.line, row.spec.id, problem.message))
    report.errors.sort(key=lambda e: e.line)
    good = [s for i, s in enumerate(specs) if i not in problems]
    if (report.errors and not skip_invalid) or dry_run or not good:
        return report
    with conn.transaction():
        report.buildings_created, report.units_created = (
            _create_locations(conn, good) if create_locations else (0, 0)
        )
        issued = _insert(conn, good, installed_by)
        if len(issued) < len(good):  # registered by someone else since the check
            done = {i.device_id for i in issued}
            lines = {row.spec.id: row.line for row in parsed.rows}
            for spec in good:
                if spec.id not in done:
                    report.errors.append(
                        RowError(lines[spec.id], spec.id, f"device {spec.id!r} already exists")
                    )
            report.errors.sort(key=lambda e: e.line)
            if not skip_invalid:
                report.buildings_created = report.units_created = 0
                raise psycopg.Rollback  # leaves the block, rolled back, without an error
        report.issued = issued
    return report


def register_device(
    conn: Conn,
    spec: DeviceSpec,
    *,
    visible: Callable[[str], bool],
    installed_by: str,
    create_locations: bool = False,
) -> tuple[DeviceRecord, str] | Problem:
    """Register one device: its record and its MQTT password, or what is wrong."""
    problem = check_specs(conn, [spec], visible=visible, create_locations=create_locations).get(0)
    if problem is not None:
        return problem
    with conn.transaction():
        if create_locations:
            _create_locations(conn, [spec])
        issued = _insert(conn, [spec], installed_by)
    if not issued:
        return Problem("id", f"device {spec.id!r} already exists", "device_exists")
    record = get_device(conn, spec.id)
    assert record is not None  # just inserted
    return record, issued[0].password


def update_device(
    conn: Conn, device_id: str, changes: dict[str, Any], *, visible: Callable[[str], bool]
) -> DeviceRecord | Problem:
    """Change registry fields; the place and the resident are checked like at registration."""
    current = get_device(conn, device_id)
    assert current is not None  # the scope check found it
    if current.state == "decommissioned" and changes:
        raise LifecycleError(f"device {device_id!r} is decommissioned")
    merged = {
        "id": current.id,
        "community_id": current.community_id,
        "device_class": current.device_class,
        "model": current.model,
        "name": current.name,
        "expected_interval_s": current.expected_interval_s,
        "building": current.building,
        "unit": current.unit,
        "resident_id": current.resident_id,
        "installed_at": current.installed_at,
        **changes,
    }
    if "building" in changes and "unit" not in changes:
        merged["unit"] = None  # a unit belongs to its building
    try:
        spec = DeviceSpec.model_validate(merged)
    except ValidationError as exc:
        return Problem("body", validation_reason(exc), "value_error")
    problem = check_specs(conn, [spec], visible=visible, create_locations=False, new_ids=False)
    if 0 in problem:
        return problem[0]
    columns = [
        "model",
        "name",
        "expected_interval_s",
        "building",
        "unit",
        "resident_id",
        "installed_at",
    ]
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns)
    with conn.transaction():
        conn.execute(
            sql.SQL("UPDATE devices SET {}, updated_at = now() WHERE id = %s").format(assignments),
            [getattr(spec, c) for c in columns] + [device_id],
        )
    record = get_device(conn, device_id)
    assert record is not None
    return record


# state -> states it may move to
_TRANSITIONS = {
    "active": {"maintenance", "decommissioned"},
    "maintenance": {"active", "decommissioned"},
    "decommissioned": set(),
}


def set_state(conn: Conn, device_id: str, state: str) -> DeviceRecord:
    """Move to ``active`` or ``maintenance`` (the same state again is a no-op)."""
    if state == "decommissioned":
        return decommission(conn, device_id)
    with conn.transaction():
        row = conn.execute(
            "SELECT state FROM devices WHERE id = %s FOR UPDATE", (device_id,)
        ).fetchone()
        assert row is not None
        if row[0] != state:
            if state not in _TRANSITIONS[row[0]]:
                raise LifecycleError(f"device {device_id!r} is {row[0]}: it cannot become {state}")
            conn.execute(
                "UPDATE devices SET state = %s, updated_at = now() WHERE id = %s",
                (state, device_id),
            )
    record = get_device(conn, device_id)
    assert record is not None
    return record


def decommission(conn: Conn, device_id: str) -> DeviceRecord:
    """Retire for good: the gateway refuses its messages, its credentials are destroyed
    (the broker refuses it from the next ``broker export``). The row stays for history."""
    with conn.transaction():
        conn.execute(
            "UPDATE devices SET state = 'decommissioned', decommissioned_at = now(),"
            " mqtt_password_hash = NULL, updated_at = now()"
            " WHERE id = %s AND state <> 'decommissioned'",
            (device_id,),
        )
    record = get_device(conn, device_id)
    assert record is not None
    return record


def rotate_credentials(conn: Conn, device_id: str) -> tuple[DeviceRecord, str]:
    """A new password (the old one works until the next ``broker export``)."""
    password = new_secret()
    with conn.transaction():
        cur = conn.execute(
            "UPDATE devices SET mqtt_password_hash = %s, credentials_rotated_at = now(),"
            " updated_at = now() WHERE id = %s AND state <> 'decommissioned'",
            (hash_password(password), device_id),
        )
        if cur.rowcount != 1:
            raise LifecycleError(f"device {device_id!r} is decommissioned")
    record = get_device(conn, device_id)
    assert record is not None
    return record, password


# --- simulated devices ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    """A simulated device as it is registered: no credentials, no place checked. The
    defaults are the columns' own."""

    id: str
    community_id: str
    device_class: str
    model: str = ""
    name: str = ""
    state: str = "active"
    expected_interval_s: int = 300
    building: str | None = None
    online: bool | None = None

    @classmethod
    def of(cls, device: Device, building: str | None = None) -> SimulatedDevice:
        return cls(
            device.id,
            device.community_id,
            device.device_class,
            device.model,
            device.name,
            device.state.value,
            device.expected_interval_s,
            building,
        )


def register_simulated(conn: Conn, devices: Iterable[SimulatedDevice]) -> int:
    """Register the devices whose ids are free; registered ones are left as they are.
    How many were new."""
    rows = [
        (
            d.id,
            d.community_id,
            d.device_class,
            d.model,
            d.name,
            d.state,
            d.expected_interval_s,
            d.building,
            d.online,
        )
        for d in devices
    ]
    if not rows:
        return 0
    columns = [list(c) for c in zip(*rows, strict=True)]
    inserted = conn.execute(
        "INSERT INTO devices (id, community_id, device_class, model, name, state,"
        " expected_interval_s, building, online)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::text[], %s::int[], %s::text[], %s::boolean[])"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        columns,
    ).fetchall()
    return len(inserted)


# --- the fire-panel bridge's devices -------------------------------------------------------

_FIRE_DEVICE = (
    "INSERT INTO devices (id, community_id, device_class, model, name, building,"
    " expected_interval_s, installed_by) VALUES (%s, %s, 'fire', %s, %s, %s, %s,"
    " 'fire-bridge')"
)


@dataclass(frozen=True, slots=True)
class FireDevice:
    """A UITD or a panel point as the fire device the bridge installs."""

    id: str
    community_id: str
    model: str
    name: str
    building: str | None
    expected_interval_s: int


def _fire_params(device: FireDevice) -> tuple[object, ...]:
    return (
        device.id,
        device.community_id,
        device.model,
        device.name,
        device.building,
        device.expected_interval_s,
    )


def insert_fire_device(conn: Conn, device: FireDevice) -> None:
    """The device (an id already taken is an error), in the caller's transaction
    (``store.fire_panels`` writes its UITD or point row next)."""
    conn.execute(_FIRE_DEVICE, _fire_params(device))


async def insert_fire_device_async(conn: AsyncConn, device: FireDevice) -> None:
    """A panel point the bridge provisions on its own; a device already there is left
    as it is. In the caller's transaction, on the bridge's asyncio connection."""
    await conn.execute(_FIRE_DEVICE + " ON CONFLICT (id) DO NOTHING", _fire_params(device))


def issue_missing_credentials(conn: Conn, device_ids: Collection[str]) -> dict[str, str]:
    """MQTT passwords for the devices that have none yet (decommissioned ones left out);
    only the hash is stored. Device id -> password, the only plaintext copy."""
    issued: dict[str, str] = {}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM devices WHERE id = ANY(%s) AND mqtt_password_hash IS NULL"
            " AND state <> 'decommissioned' ORDER BY id FOR UPDATE",
            (list(device_ids),),
        )
        for (device_id,) in cur.fetchall():
            issued[str(device_id)] = new_secret()
        cur.executemany(
            "UPDATE devices SET mqtt_password_hash = %s, credentials_rotated_at = now(),"
            " updated_at = now() WHERE id = %s",
            [(hash_password(password), device_id) for device_id, password in issued.items()],
        )
    return issued


def count_online(conn: Conn, community_id: str, *, except_installed_by: str) -> int:
    """The community's devices, decommissioned ones and those ``except_installed_by``
    installed left out, whose last status said online."""
    row = conn.execute(
        "SELECT count(*) FROM devices WHERE community_id = %s"
        " AND state <> 'decommissioned' AND online IS TRUE"
        " AND installed_by IS DISTINCT FROM %s",
        (community_id, except_installed_by),
    ).fetchone()
    return 0 if row is None else int(row[0])


def device_ids(conn: Conn, community_id: str) -> list[str]:
    """The ids of the community's devices, decommissioned ones too, in order."""
    rows = conn.execute(
        "SELECT id FROM devices WHERE community_id = %s ORDER BY id", (community_id,)
    ).fetchall()
    return [str(r[0]) for r in rows]


def unlink_resident(conn: Conn, resident_id: str) -> None:
    """A forgotten resident's wearables stay registered, linked to nobody."""
    conn.execute(
        "UPDATE devices SET resident_id = NULL, updated_at = now() WHERE resident_id = %s",
        (resident_id,),
    )


def last_heard(conn: Conn, device_id: str) -> datetime | None:
    """When the pipeline last recorded anything from the device (a reading, an event or
    a status), or None."""
    row = conn.execute(
        "SELECT greatest(last_received_at, status_at) FROM devices WHERE id = %s", (device_id,)
    ).fetchone()
    return None if row is None else row[0]
