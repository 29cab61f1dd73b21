"""Installing UITDs and mapping their panel points: what ``smartcommunity fire-bridge
register`` and ``map`` write. Synchronous (a CLI and test set-up, not the server)."""

from __future__ import annotations

from typing import Any

import psycopg

from core.gbt26875 import format_address
from core.topics import valid_id
from firebridge.mapping import component_key, system_key
from firebridge.store import POINT_INTERVAL_S

__all__ = ["map_point", "register_uitd", "uitds"]

# Room for a point suffix (".s255-255.c65535-65535") within the 64-character id.
MAX_UITD_ID = 40


def register_uitd(
    conn: psycopg.Connection[Any],
    *,
    device_id: str,
    community_id: str,
    address: bytes,
    building: str | None = None,
    name: str = "",
    auto_provision: bool = False,
    heartbeat_s: int = 60,
) -> None:
    """The UITD as a fire device of the community, and its address on the wire."""
    if not valid_id(device_id) or len(device_id) > MAX_UITD_ID:
        raise ValueError(f"UITD id {device_id!r}: letters, digits, '_.:-', at most {MAX_UITD_ID}")
    with conn.transaction():
        conn.execute(
            "INSERT INTO devices (id, community_id, device_class, model, name, building,"
            " expected_interval_s, installed_by) VALUES (%s, %s, 'fire', 'GB/T 26875 UITD',"
            " %s, %s, %s, 'fire-bridge')",
            (
                device_id,
                community_id,
                name or f"UITD {format_address(address)}",
                building,
                POINT_INTERVAL_S,
            ),
        )
        conn.execute(
            "INSERT INTO uitds (device_id, community_id, address, auto_provision, heartbeat_s)"
            " VALUES (%s, %s, %s, %s, %s)",
            (device_id, community_id, address, auto_provision, heartbeat_s),
        )
        conn.execute(
            "INSERT INTO uitd_points (uitd_id, point, community_id, device_id)"
            " VALUES (%s, '', %s, %s)",
            (device_id, community_id, device_id),
        )


def map_point(
    conn: psycopg.Connection[Any],
    *,
    uitd_id: str,
    device_id: str,
    system_type: int,
    system_address: int,
    zone: int | None = None,
    position: int | None = None,
    component_type: int | None = None,
    description: str = "",
) -> str:
    """A panel system (no zone) or component as a new fire device in the UITD's building;
    returns the point's key."""
    if (zone is None) != (position is None):
        raise ValueError("a component needs both zone and position")
    row = conn.execute(
        "SELECT u.community_id, d.building FROM uitds AS u JOIN devices AS d ON d.id = u.device_id"
        " WHERE u.device_id = %s",
        (uitd_id,),
    ).fetchone()
    if row is None:
        raise ValueError(f"no UITD {uitd_id!r}")
    community_id, building = row
    if zone is None or position is None:
        key, address = system_key(system_type, system_address), None
    else:
        key = component_key(system_type, system_address, zone, position)
        address = zone | position << 16
    with conn.transaction():
        conn.execute(
            "INSERT INTO devices (id, community_id, device_class, model, name, building,"
            " expected_interval_s, installed_by) VALUES (%s, %s, 'fire', %s, %s, %s, %s,"
            " 'fire-bridge')",
            (
                device_id,
                community_id,
                f"GB/T 26875 component type {component_type}"
                if address is not None
                else f"GB/T 26875 system type {system_type}",
                description or f"panel point {key}",
                building,
                POINT_INTERVAL_S,
            ),
        )
        conn.execute(
            "INSERT INTO uitd_points (uitd_id, point, community_id, device_id, system_type,"
            " system_address, component_type, component_address, description)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                uitd_id,
                key,
                community_id,
                device_id,
                system_type,
                system_address,
                component_type,
                address,
                description,
            ),
        )
    return key


def uitds(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT u.device_id, u.community_id, encode(u.address, 'hex'), d.building,"
        " u.auto_provision, u.heartbeat_s, d.online,"
        " (SELECT count(*) FROM uitd_points AS p WHERE p.uitd_id = u.device_id AND p.point <> '')"
        " FROM uitds AS u JOIN devices AS d ON d.id = u.device_id ORDER BY u.device_id"
    ).fetchall()
