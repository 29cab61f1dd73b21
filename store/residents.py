"""Residents in elderly care, in the database.

Personal data: the routes serving these are open to administrators and operators
only (``core.access``), and the audit log records that a name, address or contact
changed without copying it. The one writer of ``residents``: the care-visit
programme's seeding, care workers and the visit policy included; forgetting a
resident unlinks their wearables through ``store.devices``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from core.registry import ResidentSpec
from core.visits import Policy
from store.devices import unlink_resident
from store.filters import list_filter
from store.rows import Conn, first_record, records

__all__ = [
    "ResidentRecord",
    "assign_care_worker",
    "create_resident",
    "delete_resident",
    "enroll_for_visits",
    "get_resident",
    "list_residents",
    "set_visit_policy",
    "update_resident",
]


@dataclass(frozen=True, slots=True)
class ResidentRecord:
    id: str
    community_id: str
    name: str
    building: str | None
    unit: str | None
    address: str
    vulnerabilities: list[str]
    contacts: list[dict[str, Any]]
    devices: list[str]  # wearables registered to the resident, decommissioned ones left out
    created_at: datetime
    updated_at: datetime


_SELECT = sql.SQL(
    "SELECT r.id, r.community_id, r.name, r.building, r.unit, r.address, r.vulnerabilities,"
    " r.contacts, array(SELECT d.id FROM devices AS d WHERE d.resident_id = r.id"
    " AND d.state <> 'decommissioned' ORDER BY d.id) AS devices, r.created_at, r.updated_at"
    " FROM residents AS r"
)


def get_resident(conn: Conn, resident_id: str) -> ResidentRecord | None:
    return first_record(
        conn, ResidentRecord, sql.SQL("{} WHERE r.id = %s").format(_SELECT), (resident_id,)
    )


def list_residents(
    conn: Conn,
    *,
    within: Collection[str] | None,
    community_id: str | None,
    after: str | None,
    limit: int,
) -> list[ResidentRecord]:
    """By id; ``within``: only these communities' (None: every community's)."""
    where, params = list_filter("r", within=within, after=after, community_id=community_id)
    query = sql.SQL("{} WHERE {} ORDER BY r.id LIMIT %s").format(_SELECT, where)
    return records(conn, ResidentRecord, query, [*params, limit])


def create_resident(conn: Conn, spec: ResidentSpec) -> ResidentRecord | None:
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


def update_resident(conn: Conn, resident_id: str, changes: dict[str, Any]) -> ResidentRecord:
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
        unlink_resident(conn, resident_id)
        conn.execute("DELETE FROM residents WHERE id = %s", (resident_id,))


# --- care ---------------------------------------------------------------------------------


def assign_care_worker(conn: Conn, responder_id: str, resident_ids: Collection[str]) -> int:
    """The responder becomes these residents' care worker; how many were found."""
    cur = conn.execute(
        "UPDATE residents SET care_worker_id = %s WHERE id = ANY(%s)",
        (responder_id, list(resident_ids)),
    )
    return cur.rowcount


def enroll_for_visits(
    conn: Conn, community_id: str, people: Iterable[tuple[str, str, list[str], str]]
) -> None:
    """Residents of the care-visit programme, each ``(id, name, vulnerabilities, visit
    policy)``: new ones are added, those there already take the policy (nothing else)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO residents (id, community_id, name, vulnerabilities, visit_policy)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
            " SET visit_policy = excluded.visit_policy",
            [(i, community_id, name, vuln, policy) for i, name, vuln, policy in people],
        )


def set_visit_policy(conn: Conn, resident_id: str, policy: Policy) -> None:
    """How often the resident is to be visited (``core.visits``)."""
    conn.execute(
        "UPDATE residents SET visit_policy = %s, updated_at = now() WHERE id = %s",
        (policy.value, resident_id),
    )
