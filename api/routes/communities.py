"""``/api/v1/communities``: create, list, show, and each community's fleet status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.answers import found_or_404
from api.cursors import LimitQuery, id_page
from api.deps import ClockDep, ConnDep, SettingsDep, page_size
from api.registry_schemas import CommunityStatusPublic
from api.schemas import CommunitiesPublic, CommunityCreate, CommunityPublic
from api.scope import Authorized, CommunityId, widen_scope
from store import places
from store.accounts import add_member
from store.devices import fleet_status

__all__ = ["router"]

router = APIRouter(prefix="/communities", tags=["communities"])


def _public(record: places.CommunityRecord) -> CommunityPublic:
    return CommunityPublic.model_validate(record, from_attributes=True)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_community(
    conn: ConnDep, principal: Authorized, body: CommunityCreate
) -> CommunityPublic:
    """Create a community; devices can then be registered in it. 409 if the id exists.

    An administrator scoped to some communities gets the new one added to them."""
    # The new community is the caller's from now on, for row-level security too.
    widen_scope(conn, principal, body.id)
    with conn.transaction():
        created = places.create_community(conn, body.id, body.name, body.kind, body.time_zone)
        if created is not None and principal.communities is not None:
            add_member(conn, principal.user_id, body.id)
    if created is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"community {body.id!r} already exists"
        )
    return _public(created)


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
    rows = places.list_communities(conn, within=principal.communities, after=after, limit=size + 1)
    data, cursor = id_page(rows, size, _public)
    return CommunitiesPublic(data=data, next_cursor=cursor)


@router.get("/{community_id}")
def get_community(conn: ConnDep, _p: Authorized, community_id: CommunityId) -> CommunityPublic:
    found = found_or_404(places.get_community(conn, community_id), f"no community {community_id!r}")
    return _public(found)


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
    status_now = fleet_status(conn, community_id, clock(), page_size(settings, limit))
    return CommunityStatusPublic.model_validate(status_now, from_attributes=True)
