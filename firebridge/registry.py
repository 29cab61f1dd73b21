"""Installing UITDs and mapping their panel points: what ``smartcommunity fire-bridge
register`` and ``map`` write (through ``store.devices`` and ``store.fire_panels``).
Synchronous (a CLI and test set-up, not the server)."""

from __future__ import annotations

from typing import Any

import psycopg

from core.gbt26875 import format_address
from core.topics import valid_id
from firebridge.mapping import PointSpec, component_key, system_key
from firebridge.store import POINT_INTERVAL_S, panel_point, point_device
from store import devices, fire_panels

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
        devices.insert_fire_device(
            conn,
            devices.FireDevice(
                device_id,
                community_id,
                "GB/T 26875 UITD",
                name or f"UITD {format_address(address)}",
                building,
                POINT_INTERVAL_S,
            ),
        )
        fire_panels.insert_uitd(
            conn,
            device_id=device_id,
            community_id=community_id,
            address=address,
            auto_provision=auto_provision,
            heartbeat_s=heartbeat_s,
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
    row = fire_panels.uitd_place(conn, uitd_id)
    if row is None:
        raise ValueError(f"no UITD {uitd_id!r}")
    community_id, building = row
    if zone is None or position is None:
        key = system_key(system_type, system_address)
        spec = PointSpec(key, system_type, system_address, description=description)
    else:
        key = component_key(system_type, system_address, zone, position)
        address = zone | position << 16
        spec = PointSpec(key, system_type, system_address, component_type, address, description)
    with conn.transaction():
        devices.insert_fire_device(conn, point_device(spec, community_id, building, device_id))
        fire_panels.insert_point(conn, panel_point(spec, uitd_id, community_id, device_id))
    return key


def uitds(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return fire_panels.list_uitds(conn)
