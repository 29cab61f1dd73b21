"""``audit_log``: who changed what and when, with the row before and after. The
registry tables' triggers of migration 0004 write the changes; ``record_refusal``
writes the API's refused attempts at another community's objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from store.rows import Conn, records
from store.scoping import Communities, scoped

__all__ = ["AuditEntry", "audit_entries", "record_refusal"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    community_id: str | None
    changed: list[str]
    before: dict[str, Any] | None
    after: dict[str, Any] | None


_SELECT = sql.SQL(
    "SELECT id, at, actor, action, entity, entity_id, community_id, changed, before, after"
    " FROM audit_log WHERE {} ORDER BY id DESC LIMIT %s"
)


def audit_entries(
    conn: Conn,
    communities: Communities,
    *,
    limit: int,
    entity: str | None = None,
    entity_id: str | None = None,
    community_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Changes newest first; those without a community only when ``communities`` is None."""
    terms, params = scoped(
        communities,
        (
            ("entity = %s", entity),
            ("entity_id = %s", entity_id),
            ("community_id = %s", community_id),
            ("actor = %s", actor),
            ("at >= %s", since),
            ("id < %s", before_id),
        ),
    )
    where = sql.SQL(" AND ".join(terms))  # constant terms
    return records(conn, AuditEntry, _SELECT.format(where), [*params, limit])


def record_refusal(
    conn: Conn,
    actor: str,
    entity: str,
    target: object,
    community: str | None,
    *,
    method: str,
    route: str,
) -> None:
    """Write a refused attempt at an object (action ``refused``) in a savepoint: a
    failed insert raises ``psycopg.Error`` but leaves the caller's transaction usable."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id, community_id, after)"
            " VALUES (%s, 'refused', %s, %s, %s, %s)",
            (actor, entity, str(target), community, Jsonb({"method": method, "route": route})),
        )
