"""``/api/v1/communities/{community_id}/buildings``: the places devices and residents are in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.cursors import LimitQuery
from api.deps import ConnDep, SettingsDep, page_size
from api.registry_places import create_building, create_unit, get_building, list_buildings
from api.registry_schemas import BuildingPublic, BuildingsPublic
from api.scope import Authorized, BuildingId, CommunityId, not_found
from core.registry import BuildingSpec, UnitSpec

__all__ = ["router"]

router = APIRouter(prefix="/communities/{community_id}/buildings", tags=["buildings"])


@router.post("", status_code=status.HTTP_201_CREATED)
def add_building(
    conn: ConnDep, _p: Authorized, community_id: CommunityId, body: BuildingSpec
) -> BuildingPublic:
    """Add a building to the community. 409 if its id is taken there."""
    created = create_building(conn, community_id, body)
    if created is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"building {body.id!r} already exists")
    return created


@router.get("")
def buildings(
    conn: ConnDep,
    settings: SettingsDep,
    _p: Authorized,
    community_id: CommunityId,
    limit: LimitQuery = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> BuildingsPublic:
    """Buildings by id, each with its units."""
    size = page_size(settings, limit)
    rows = list_buildings(conn, community_id, after=after, limit=size + 1)
    more = len(rows) > size
    rows = rows[:size]
    return BuildingsPublic(data=rows, next_cursor=rows[-1].id if more else None)


@router.get("/{building_id}")
def building(
    conn: ConnDep, _p: Authorized, community_id: CommunityId, building_id: BuildingId
) -> BuildingPublic:
    found = get_building(conn, community_id, building_id)
    if found is None:
        raise not_found(f"no building {building_id!r}")
    return found


@router.post("/{building_id}/units", status_code=status.HTTP_201_CREATED)
def add_unit(
    conn: ConnDep,
    _p: Authorized,
    community_id: CommunityId,
    building_id: BuildingId,
    body: UnitSpec,
) -> BuildingPublic:
    """Add a unit (flat, room) to a building; returns the building with its units."""
    if get_building(conn, community_id, building_id) is None:
        raise not_found(f"no building {building_id!r}")
    if not create_unit(conn, community_id, building_id, body):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"unit {body.id!r} already exists")
    found = get_building(conn, community_id, building_id)
    assert found is not None
    return found
