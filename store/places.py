"""Communities, their buildings and the buildings' units, in the database.

The writer of ``communities`` (as the API and the CLI create them; a community's
visit deadline and dispatch gateway), ``buildings`` and ``units``; a device import
creates the places its rows name through ``create_missing``. Functions take a psycopg
connection and return plain records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from core.registry import BuildingSpec, UnitSpec
from store.filters import list_filter
from store.rows import Conn

__all__ = [
    "BuildingRecord",
    "CommunityRecord",
    "CommunityTotals",
    "UnitRecord",
    "community_exists",
    "community_ids",
    "community_totals",
    "create_building",
    "create_community",
    "create_missing",
    "create_unit",
    "ensure_community",
    "get_building",
    "get_community",
    "list_buildings",
    "list_communities",
    "place_problem",
    "set_dispatch_gateway",
    "set_visit_deadline_day",
]


@dataclass(frozen=True, slots=True)
class CommunityRecord:
    id: str
    name: str
    kind: str
    time_zone: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CommunityTotals:
    id: str
    name: str
    kind: str
    time_zone: str
    devices: int  # decommissioned ones left out
    buildings: int


@dataclass(frozen=True, slots=True)
class UnitRecord:
    id: str
    floor: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BuildingRecord:
    community_id: str
    id: str
    name: str
    address: str
    floors: int | None
    created_at: datetime
    units: list[UnitRecord]


# --- communities ----------------------------------------------------------------------------

_COMMUNITY = "SELECT id, name, kind, time_zone, created_at FROM communities"


def create_community(
    conn: Conn, community_id: str, name: str, kind: str, time_zone: str
) -> CommunityRecord | None:
    """The new community, or None when the id is taken."""
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO communities (id, name, kind, time_zone) VALUES (%s, %s, %s, %s)"
                " RETURNING id, name, kind, time_zone, created_at",
                (community_id, name, kind, time_zone),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        return None
    assert row is not None  # INSERT ... RETURNING returns the row
    return CommunityRecord(*row)


def get_community(conn: Conn, community_id: str) -> CommunityRecord | None:
    row = conn.execute(f"{_COMMUNITY} WHERE id = %s".encode(), (community_id,)).fetchone()
    return None if row is None else CommunityRecord(*row)


def community_exists(conn: Conn, community_id: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM communities WHERE id = %s", (community_id,)).fetchone()
        is not None
    )


def list_communities(
    conn: Conn, *, within: Collection[str] | None, after: str | None, limit: int
) -> list[CommunityRecord]:
    """By id; ``within``: only these (None: every community)."""
    where, params = list_filter(None, within=within, after=after, scope="id")
    query = sql.SQL(_COMMUNITY + " WHERE {} ORDER BY id LIMIT %s").format(where)
    return [CommunityRecord(*r) for r in conn.execute(query, [*params, limit])]


def community_totals(conn: Conn) -> list[CommunityTotals]:
    """Every community with its device and building counts, by id."""
    rows = conn.execute(
        "SELECT c.id, c.name, c.kind, c.time_zone,"
        " (SELECT count(*) FROM devices d WHERE d.community_id = c.id"
        "  AND d.state <> 'decommissioned'),"
        " (SELECT count(*) FROM buildings b WHERE b.community_id = c.id)"
        " FROM communities c ORDER BY c.id"
    ).fetchall()
    return [CommunityTotals(r[0], r[1], r[2], r[3], int(r[4]), int(r[5])) for r in rows]


# --- buildings and units --------------------------------------------------------------------

_BUILDING = "SELECT community_id, id, name, address, floors, created_at FROM buildings"


def _units(
    conn: Conn, community_id: str, building_ids: Sequence[str]
) -> dict[str, list[UnitRecord]]:
    found: dict[str, list[UnitRecord]] = {b: [] for b in building_ids}
    for building, unit, floor, created_at in conn.execute(
        "SELECT building_id, id, floor, created_at FROM units"
        " WHERE community_id = %s AND building_id = ANY(%s) ORDER BY building_id, id",
        (community_id, list(building_ids)),
    ):
        found[building].append(UnitRecord(unit, floor, created_at))
    return found


def _buildings(
    conn: Conn, community_id: str, rows: Iterable[tuple[Any, ...]]
) -> list[BuildingRecord]:
    rows = list(rows)
    units = _units(conn, community_id, [r[1] for r in rows])
    return [
        BuildingRecord(
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


def list_buildings(
    conn: Conn, community_id: str, *, after: str | None, limit: int
) -> list[BuildingRecord]:
    rows = conn.execute(
        f"{_BUILDING} WHERE community_id = %s AND id > %s ORDER BY id LIMIT %s".encode(),
        (community_id, after or "", limit),
    )
    return _buildings(conn, community_id, rows)


def get_building(conn: Conn, community_id: str, building_id: str) -> BuildingRecord | None:
    rows = conn.execute(
        f"{_BUILDING} WHERE community_id = %s AND id = %s".encode(),
        (community_id, building_id),
    )
    found = _buildings(conn, community_id, rows)
    return found[0] if found else None


def create_building(conn: Conn, community_id: str, spec: BuildingSpec) -> BuildingRecord | None:
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


def create_missing(
    conn: Conn,
    buildings: Collection[tuple[str, str]],
    units: dict[tuple[str, str, str], int | None],
) -> tuple[int, int]:
    """Create the (community, building) and (community, building, unit: floor) places not
    there yet; how many buildings and units were new."""
    made_b = made_u = 0
    if buildings:
        ordered = sorted(buildings)
        made_b = len(
            conn.execute(
                "INSERT INTO buildings (community_id, id)"
                " SELECT * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT DO NOTHING RETURNING id",
                ([c for c, _ in ordered], [b for _, b in ordered]),
            ).fetchall()
        )
    if units:
        keys = sorted(units)
        made_u = len(
            conn.execute(
                "INSERT INTO units (community_id, building_id, id, floor)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[])"
                " ON CONFLICT DO NOTHING RETURNING id",
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [units[k] for k in keys],
                ),
            ).fetchall()
        )
    return made_b, made_u


def place_problem(
    conn: Conn, community_id: str, building: str | None, unit: str | None
) -> str | None:
    """Why the building or unit is not a place in the community, or None."""
    if building is not None:
        found = conn.execute(
            "SELECT 1 FROM buildings WHERE community_id = %s AND id = %s", (community_id, building)
        ).fetchone()
        if found is None:
            return f"unknown building {building!r}"
    if unit is not None:
        found = conn.execute(
            "SELECT 1 FROM units WHERE community_id = %s AND building_id = %s AND id = %s",
            (community_id, building, unit),
        ).fetchone()
        if found is None:
            return f"unknown unit {unit!r}"
    return None


# --- seeding --------------------------------------------------------------------------------


def ensure_community(
    conn: Conn,
    community_id: str,
    name: str,
    *,
    kind: str | None = None,
    time_zone: str | None = None,
) -> bool:
    """Create the community unless its id is taken (then it is left as it is); a kind or
    time zone not given takes the column's default. True when it was new."""
    given = {"id": community_id, "name": name, "kind": kind, "time_zone": time_zone}
    columns = {k: v for k, v in given.items() if v is not None}
    query = sql.SQL("INSERT INTO communities ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    return conn.execute(query, list(columns.values())).rowcount == 1


def community_ids(conn: Conn) -> list[str]:
    """Every community's id, in order."""
    return [str(r[0]) for r in conn.execute("SELECT id FROM communities ORDER BY id")]


def set_visit_deadline_day(conn: Conn, community_id: str, day: int) -> bool:
    """The day of the month an unvisited resident raises an alert; False: no community."""
    cur = conn.execute(
        "UPDATE communities SET visit_deadline_day = %s WHERE id = %s", (day, community_id)
    )
    return cur.rowcount == 1


def set_dispatch_gateway(
    conn: Conn, community_id: str, url: str | None, secret: str | None
) -> bool:
    """Where a community's dispatches are also pushed (webhook); False: no community."""
    cur = conn.execute(
        "UPDATE communities SET dispatch_webhook_url = %s, dispatch_webhook_secret = %s"
        " WHERE id = %s",
        (url, secret, community_id),
    )
    return cur.rowcount == 1
