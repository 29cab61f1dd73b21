"""Residents in elderly care, in the database.

Personal data: the routes serving these are open to administrators and
operators only (``core.access``), and the audit log records that a name,
address or contact changed without copying it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from api.registry_schemas import ResidentPublic
from core.registry import ResidentSpec

__all__ = [
    "create_resident",
    "delete_resident",
    "get_resident",
    "list_residents",
    "place_problem",
    "update_resident",
]

Conn = psycopg.Connection[Any]

_SELECT = sql.SQL(
    "SELECT r.id, r.community_id, r.name, r.building, r.unit, r.address, r.vulnerabilities,"
    " r.contacts, array(SELECT d.id FROM devices AS d WHERE d.resident_id = r.id"
    " AND d.state <> 'decommissioned' ORDER BY d.id), r.created_at, r.updated_at"
    " FROM residents AS r"
)
_FIELDS = (
    "id",
    "community_id",
    "name",
    "building",
    "unit",
    "address",
    "vulnerabilities",
    "contacts",
    "devices",
    "created_at",
    "updated_at",
)


def _public(row: tuple[Any, ...]) -> ResidentPublic:
    return ResidentPublic(**dict(zip(_FIELDS, row, strict=True)))


def get_resident(conn: Conn, resident_id: str) -> ResidentPublic | None:
    row = conn.execute(sql.SQL("{} WHERE r.id = %s").format(_SELECT), (resident_id,)).fetchone()
    return None if row is None else _public(row)


def list_residents(
    conn: Conn, where: sql.Composable, params: list[object], limit: int
) -> list[ResidentPublic]:
    query = sql.SQL("{} WHERE {} ORDER BY r.id LIMIT %s").format(_SELECT, where)
    return [_public(row) for row in conn.execute(query, [*params, limit])]


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


def create_resident(conn: Conn, spec: ResidentSpec) -> ResidentPublic | None:
    """The new resident, or None when the id is taken."""
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO residents (id, community_id, name, building, unit, address,"
            " vulnerabilities, contacts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (
                spec.id,
                spec.community_id,
                spec.name,
                spec.building,
                spec.unit,
                spec.address,
                spec.vulnerabilities,
                Jsonb([c.model_dump() for c in spec.contacts]),
            ),
        )
    if cur.rowcount != 1:
        return None
    return get_resident(conn, spec.id)


def update_resident(conn: Conn, resident_id: str, changes: dict[str, Any]) -> ResidentPublic:
    if changes:
        values = {
            k: Jsonb([c.model_dump() for c in v or ()]) if k == "contacts" else v
            for k, v in changes.items()
        }
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values
        )
        with conn.transaction():
            conn.execute(
                sql.SQL("UPDATE residents SET {}, updated_at = now() WHERE id = %s").format(
                    assignments
                ),
                [*values.values(), resident_id],
            )
    found = get_resident(conn, resident_id)
    assert found is not None  # the scope check found it
    return found


def delete_resident(conn: Conn, resident_id: str) -> None:
    """Forget a resident (moved out, died, withdrew consent); their wearables stay."""
    with conn.transaction():
        conn.execute(
            "UPDATE devices SET resident_id = NULL, updated_at = now() WHERE resident_id = %s",
            (resident_id,),
        )
        conn.execute("DELETE FROM residents WHERE id = %s", (resident_id,))
