"""Reads of ``audit_log``: who changed what and when, with the row before and after.
(The registry tables' triggers of migration 0004 and ``api/scope.py`` write it.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from store.scoping import Communities, community_filter

__all__ = ["AuditEntry", "audit_entries"]

Conn = psycopg.Connection[Any]


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
    scope, params = community_filter(communities)
    where: list[sql.Composable] = [sql.SQL(scope)]  # constant text (store.scoping)
    for column, value in (
        ("entity", entity),
        ("entity_id", entity_id),
        ("community_id", community_id),
        ("actor", actor),
    ):
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if since is not None:
        where.append(sql.SQL("at >= %s"))
        params.append(since)
    if before_id is not None:
        where.append(sql.SQL("id < %s"))
        params.append(before_id)
    with conn.cursor(row_factory=class_row(AuditEntry)) as cur:
        return cur.execute(
            _SELECT.format(sql.SQL(" AND ").join(where)), [*params, limit]
        ).fetchall()
