"""``/api/v1/communities/{community_id}/buildings``: the places devices and residents are in."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, status

from api.answers import found_or_404, made_or_409
from api.cursors import LimitQuery, id_page
from api.deps import ConnDep, SettingsDep, page_size
from api.registry_schemas import BuildingPublic, BuildingsPublic
from api.scope import Authorized, BuildingId, CommunityId
from core.registry import BuildingSpec, UnitSpec
from store import places

__all__ = ["router"]

router = APIRouter(prefix="/communities/{community_id}/buildings", tags=["buildings"])


def _public(record: places.BuildingRecord) -> BuildingPublic:
    return BuildingPublic.model_validate(record, from_attributes=True)


def _building_or_404(
    conn: psycopg.Connection[Any], community_id: str, building_id: str
) -> BuildingPublic:
    found = found_or_404(
        places.get_building(conn, community_id, building_id), f"no building {building_id!r}"
    )
    return _public(found)


@router.post("", status_code=status.HTTP_201_CREATED)
def add_building(
    conn: ConnDep, _p: Authorized, community_id: CommunityId, body: BuildingSpec
) -> BuildingPublic:
    """Add a building to the community. 409 if its id is taken there."""
    created = made_or_409(
        places.create_building(conn, community_id, body), f"building {body.id!r} already exists"
    )
    return _public(created)


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
    rows = places.list_buildings(conn, community_id, after=after, limit=size + 1)
    data, cursor = id_page(rows, size, _public)
    return BuildingsPublic(data=data, next_cursor=cursor)


@router.get("/{building_id}")
def building(
    conn: ConnDep, _p: Authorized, community_id: CommunityId, building_id: BuildingId
) -> BuildingPublic:
    return _building_or_404(conn, community_id, building_id)


@router.post("/{building_id}/units", status_code=status.HTTP_201_CREATED)
def add_unit(
    conn: ConnDep,
    _p: Authorized,
    community_id: CommunityId,
    building_id: BuildingId,
    body: UnitSpec,
) -> BuildingPublic:
    """Add a unit (flat, room) to a building; returns the building with its units."""
    _building_or_404(conn, community_id, building_id)
    if not places.create_unit(conn, community_id, building_id, body):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"unit {body.id!r} already exists")
    return _building_or_404(conn, community_id, building_id)
