"""``/api/v1/audit``: who changed what and when, with the row before and after."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from psycopg import sql
from psycopg.rows import class_row
from pydantic import AwareDatetime

from api.cursors import LimitQuery
from api.deps import ConnDep, SettingsDep, page_size
from api.registry_schemas import AuditEntriesPublic, AuditEntryPublic
from api.scope import Authorized, community_filter

__all__ = ["router"]

router = APIRouter(prefix="/audit", tags=["audit"])

_SELECT = sql.SQL(
    "SELECT id, at, actor, action, entity, entity_id, community_id, changed, before, after"
    " FROM audit_log WHERE {} ORDER BY id DESC LIMIT %s"
)
Short = Annotated[str | None, Query(max_length=200)]


@router.get("")
def audit_log(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    entity: Annotated[str | None, Query(description="device, rule, user, alert, ...")] = None,
    entity_id: Short = None,
    community_id: Short = None,
    actor: Short = None,
    since: AwareDatetime | None = None,
    limit: LimitQuery = None,
    after: Annotated[
        int | None, Query(ge=0, description="next_cursor of the previous page")
    ] = None,
) -> AuditEntriesPublic:
    """Changes, newest first. Administrators of some communities see theirs; changes to
    users, tokens and rules (no community) only administrators of every community."""
    size = page_size(settings, limit)
    scope, params = community_filter(principal)
    where: list[sql.Composable] = [scope]
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
    if after is not None:
        where.append(sql.SQL("id < %s"))
        params.append(after)
    with conn.cursor(row_factory=class_row(AuditEntryPublic)) as cur:
        rows = cur.execute(
            _SELECT.format(sql.SQL(" AND ").join(where)), [*params, size + 1]
        ).fetchall()
    more = len(rows) > size
    rows = rows[:size]
    return AuditEntriesPublic(data=rows, next_cursor=str(rows[-1].id) if more else None)
