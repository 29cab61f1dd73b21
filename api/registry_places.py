"""Buildings and units of a community, and its fleet status, in the database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from api.registry_devices import DEVICE_SELECT, DeviceRecord
from api.registry_schemas import (
    BuildingPublic,
    CommunityStatusPublic,
    DeviceHealthPublic,
    UnitPublic,
)
from core.connectivity import Connectivity, Presence, judge, low_battery, weak_signal
from core.models import DeviceState
from core.registry import BuildingSpec, UnitSpec

__all__ = [
    "create_building",
    "create_unit",
    "fleet_status",
    "get_building",
    "list_buildings",
    "presence_of",
]

Conn = psycopg.Connection[Any]

_BUILDING = "community_id, id, name, address, floors, created_at"
# Worst first: a device that stopped talking before one that is merely weak.
_SEVERITY = {
    Connectivity.OFFLINE: 0,
    Connectivity.SILENT: 1,
    Connectivity.NEVER_SEEN: 2,
    Connectivity.ONLINE: 3,
    Connectivity.RETIRED: 4,
}


def _units(
    conn: Conn, community_id: str, building_ids: Sequence[str]
) -> dict[str, list[UnitPublic]]:
    found: dict[str, list[UnitPublic]] = {b: [] for b in building_ids}
    for building, unit, floor, created_at in conn.execute(
        "SELECT building_id, id, floor, created_at FROM units"
        " WHERE community_id = %s AND building_id = ANY(%s) ORDER BY building_id, id",
        (community_id, list(building_ids)),
    ):
        found[building].append(UnitPublic(id=unit, floor=floor, created_at=created_at))
    return found


def list_buildings(
    conn: Conn, community_id: str, *, after: str | None, limit: int
) -> list[BuildingPublic]:
    rows = conn.execute(
        f"SELECT {_BUILDING} FROM buildings WHERE community_id = %s AND id > %s"  # noqa: S608 - constant columns
        " ORDER BY id LIMIT %s",
        (community_id, after or "", limit),
    ).fetchall()
    units = _units(conn, community_id, [r[1] for r in rows])
    return [
        BuildingPublic(
            community_id=r[0],
            id=r[1],
            name=r[2],
            address=r[3],
            floors=r[4],
            created_at=r[5],
            units=units[r[1]],
        )
        for r in rows
    ]


def get_building(conn: Conn, community_id: str, building_id: str) -> BuildingPublic | None:
    row = conn.execute(
        f"SELECT {_BUILDING} FROM buildings WHERE community_id = %s AND id = %s",  # noqa: S608 - constant columns
        (community_id, building_id),
    ).fetchone()
    if row is None:
        return None
    units = _units(conn, community_id, [building_id])[building_id]
    return BuildingPublic(
        community_id=row[0],
        id=row[1],
        name=row[2],
        address=row[3],
        floors=row[4],
        created_at=row[5],
        units=units,
    )


def create_building(conn: Conn, community_id: str, spec: BuildingSpec) -> BuildingPublic | None:
    """The new building, or None when the id is taken in this community."""
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO buildings (community_id, id, name, address, floors)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (community_id, spec.id, spec.name, spec.address, spec.floors),
        )
    if cur.rowcount != 1:
        return None
    return get_building(conn, community_id, spec.id)


def create_unit(conn: Conn, community_id: str, building_id: str, spec: UnitSpec) -> bool:
    """False when the unit exists already."""
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO units (community_id, building_id, id, floor) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (community_id, building_id, spec.id, spec.floor),
        )
    return cur.rowcount == 1


def presence_of(device: DeviceRecord) -> Presence:
    return Presence(
        state=device.state,
        expected_interval_s=device.expected_interval_s,
        last_received_at=device.last_received_at,
        online=device.online,
        status_at=device.status_at,
    )


def fleet_status(conn: Conn, community_id: str, now: datetime, limit: int) -> CommunityStatusPublic:
    """Counts by state and connectivity, and the devices that need someone's attention."""
    query = sql.SQL("{} WHERE d.community_id = %s AND d.state <> 'decommissioned'").format(
        DEVICE_SELECT
    )
    with conn.cursor(row_factory=class_row(DeviceRecord)) as cur:
        devices = cur.execute(query, (community_id,)).fetchall()
    by_state: Counter[str] = Counter()
    by_connectivity: Counter[str] = Counter()
    attention: list[tuple[int, str, DeviceHealthPublic]] = []
    batteries = signals = 0
    for device in devices:
        connectivity = judge(presence_of(device), now)
        by_state[device.state] += 1
        by_connectivity[connectivity.value] += 1
        problems = [connectivity.value] if connectivity is not Connectivity.ONLINE else []
        if low_battery(device.battery):
            batteries += 1
            problems.append("low_battery")
        if weak_signal(device.rssi):
            signals += 1
            problems.append("weak_signal")
        if problems and device.state == DeviceState.ACTIVE:
            health = DeviceHealthPublic(
                id=device.id,
                device_class=device.device_class,
                state=DeviceState(device.state),
                connectivity=connectivity,
                battery=device.battery,
                rssi=device.rssi,
                last_received_at=device.last_received_at,
                building=device.building,
                unit=device.unit,
                problems=problems,
            )
            attention.append((_SEVERITY[connectivity], device.id, health))
    attention.sort(key=lambda item: item[:2])
    return CommunityStatusPublic(
        community_id=community_id,
        at=now,
        devices=len(devices),
        by_state=dict(sorted(by_state.items())),
        by_connectivity={
            c.value: by_connectivity[c.value] for c in Connectivity if c is not Connectivity.RETIRED
        },
        low_battery=batteries,
        weak_signal=signals,
        attention=[health for *_, health in attention[:limit]],
    )
