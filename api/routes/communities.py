"""``/api/v1/communities``: create, list, show, and each community's fleet status."""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Query, status
from psycopg import sql
from psycopg.rows import class_row

from api.cursors import LimitQuery
from api.deps import ClockDep, ConnDep, SettingsDep, page_size
from api.registry_places import fleet_status
from api.registry_schemas import CommunityStatusPublic
from api.schemas import CommunitiesPublic, CommunityCreate, CommunityPublic
from api.scope import Authorized, CommunityId, community_filter, not_found, widen_scope

__all__ = ["router"]

router = APIRouter(prefix="/communities", tags=["communities"])

_COLUMNS = sql.SQL("id, name, kind, time_zone, created_at")


@router.post("", status_code=status.HTTP_201_CREATED)
def create_community(
    conn: ConnDep, principal: Authorized, body: CommunityCreate
) -> CommunityPublic:
    """Create a community; devices can then be registered in it. 409 if the id exists.

    An administrator scoped to some communities gets the new one added to them."""
    # The new community is the caller's from now on, for row-level security too.
    widen_scope(conn, principal, body.id)
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(CommunityPublic)) as cur:
            created = cur.execute(
                sql.SQL(
                    "INSERT INTO communities (id, name, kind, time_zone) VALUES (%s, %s, %s, %s)"
                    " RETURNING {}"
                ).format(_COLUMNS),
                (body.id, body.name, body.kind, body.time_zone),
            ).fetchone()
            if principal.communities is not None:
                cur.execute(
                    "INSERT INTO user_communities (user_id, community_id) VALUES (%s, %s)",
                    (principal.user_id, body.id),
                )
    except psycopg.errors.UniqueViolation:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"community {body.id!r} already exists"
        ) from None
    assert created is not None  # INSERT ... RETURNING returns the row
    return created


@router.get("")
def list_communities(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    limit: LimitQuery = None,
    after: Annotated[
        str | None, Query(description="next_cursor of the previous page", max_length=64)
    ] = None,
) -> CommunitiesPublic:
    """Your communities ordered by id. Pass ``next_cursor`` as ``after`` for the next page."""
    size = page_size(settings, limit)
    scope, params = community_filter(principal, "id")
    query = sql.SQL("SELECT {} FROM communities WHERE {} AND id > %s ORDER BY id LIMIT %s").format(
        _COLUMNS, scope
    )
    with conn.cursor(row_factory=class_row(CommunityPublic)) as cur:
        rows = cur.execute(query, [*params, after or "", size + 1]).fetchall()
    more = len(rows) > size
    rows = rows[:size]
    return CommunitiesPublic(data=rows, next_cursor=rows[-1].id if more else None)


@router.get("/{community_id}")
def get_community(conn: ConnDep, _p: Authorized, community_id: CommunityId) -> CommunityPublic:
    query = sql.SQL("SELECT {} FROM communities WHERE id = %s").format(_COLUMNS)
    with conn.cursor(row_factory=class_row(CommunityPublic)) as cur:
        found = cur.execute(query, (community_id,)).fetchone()
    if found is None:
        raise not_found(f"no community {community_id!r}")
    return found


@router.get("/{community_id}/status")
def community_status(
    conn: ConnDep,
    settings: SettingsDep,
    clock: ClockDep,
    _p: Authorized,
    community_id: CommunityId,
    limit: LimitQuery = None,
) -> CommunityStatusPublic:
    """Fleet status: devices by state and connectivity (status channel, Last Will and
    silence against each device's expected interval), low batteries, weak signals, and
    the devices that need attention, worst first."""
    return fleet_status(conn, community_id, clock(), page_size(settings, limit))
