"""``/api/v1/communities``: create, list, show."""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, status
from psycopg.rows import class_row

from api.cursors import LimitQuery
from api.deps import ConnDep, SettingsDep, page_size
from api.schemas import CommunitiesPublic, CommunityCreate, CommunityPublic

__all__ = ["router"]

router = APIRouter(prefix="/communities", tags=["communities"])

_INSERT = (
    "INSERT INTO communities (id, name, kind, time_zone) VALUES (%s, %s, %s, %s)"
    " RETURNING id, name, kind, time_zone, created_at"
)
_LIST_FIRST = "SELECT id, name, kind, time_zone, created_at FROM communities ORDER BY id LIMIT %s"
_LIST_AFTER = (
    "SELECT id, name, kind, time_zone, created_at FROM communities"
    " WHERE id > %s ORDER BY id LIMIT %s"
)
_GET = "SELECT id, name, kind, time_zone, created_at FROM communities WHERE id = %s"


@router.post("", status_code=status.HTTP_201_CREATED)
def create_community(conn: ConnDep, body: CommunityCreate) -> CommunityPublic:
    """Create a community; devices can then be registered in it. 409 if the id exists."""
    try:
        with conn.cursor(row_factory=class_row(CommunityPublic)) as cur:
            cur.execute(_INSERT, (body.id, body.name, body.kind, body.time_zone))
            created = cur.fetchone()
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
    limit: LimitQuery = None,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> CommunitiesPublic:
    """Communities ordered by id. Pass ``next_cursor`` as ``after`` for the next page."""
    size = page_size(settings, limit)
    with conn.cursor(row_factory=class_row(CommunityPublic)) as cur:
        if after is None:
            cur.execute(_LIST_FIRST, (size + 1,))
        else:
            cur.execute(_LIST_AFTER, (after, size + 1))
        rows = cur.fetchall()
    more = len(rows) > size
    rows = rows[:size]
    return CommunitiesPublic(data=rows, next_cursor=rows[-1].id if more else None)


@router.get("/{community_id}")
def get_community(conn: ConnDep, community_id: Annotated[str, Path()]) -> CommunityPublic:
    with conn.cursor(row_factory=class_row(CommunityPublic)) as cur:
        found = cur.execute(_GET, (community_id,)).fetchone()
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no community {community_id!r}")
    return found
