"""``/api/v1/residents``: people in elderly care. Administrators and operators only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from psycopg import sql

from api.cursors import LimitQuery
from api.deps import ConnDep, SettingsDep, page_size
from api.registry_residents import (
    create_resident,
    delete_resident,
    get_resident,
    list_residents,
    place_problem,
    update_resident,
)
from api.registry_schemas import ResidentPublic, ResidentsPublic
from api.scope import Authorized, ResidentId, body_community, community_filter, not_found
from core.registry import ResidentPatch, ResidentSpec, changed_fields

__all__ = ["router"]

router = APIRouter(prefix="/residents", tags=["residents"])


def _place_error(message: str) -> HTTPException:
    field = "building" if message.startswith("unknown building") else "unit"
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["body", field], "msg": message, "type": f"unknown_{field}"}],
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def add_resident(
    request: Request, conn: ConnDep, principal: Authorized, body: ResidentSpec
) -> ResidentPublic:
    """Enrol a resident. Link their wearable with the device's ``resident_id``."""
    body_community(conn, principal, request, body.community_id)
    problem = place_problem(conn, body.community_id, body.building, body.unit)
    if problem is not None:
        raise _place_error(problem)
    created = create_resident(conn, body)
    if created is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"resident {body.id!r} already exists")
    return created


@router.get("")
def residents(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: LimitQuery = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> ResidentsPublic:
    size = page_size(settings, limit)
    scope, params = community_filter(principal, "r.community_id")
    where: list[sql.Composable] = [scope, sql.SQL("r.id > %s")]
    params.append(after or "")
    if community_id is not None:
        where.append(sql.SQL("r.community_id = %s"))
        params.append(community_id)
    rows = list_residents(conn, sql.SQL(" AND ").join(where), params, size + 1)
    more = len(rows) > size
    rows = rows[:size]
    return ResidentsPublic(data=rows, next_cursor=rows[-1].id if more else None)


@router.get("/{resident_id}")
def resident(conn: ConnDep, _p: Authorized, resident_id: ResidentId) -> ResidentPublic:
    found = get_resident(conn, resident_id)
    if found is None:
        raise not_found(f"no resident {resident_id!r}")
    return found


@router.patch("/{resident_id}")
def change_resident(
    conn: ConnDep, _p: Authorized, resident_id: ResidentId, body: ResidentPatch
) -> ResidentPublic:
    current = get_resident(conn, resident_id)
    if current is None:
        raise not_found(f"no resident {resident_id!r}")
    changes = changed_fields(body)
    if "building" in changes and "unit" not in changes:
        changes["unit"] = None
    building = changes.get("building", current.building)
    unit = changes.get("unit", current.unit)
    if unit is not None and building is None:
        raise _place_error("unknown unit: a unit needs its building")
    problem = place_problem(conn, current.community_id, building, unit)
    if problem is not None:
        raise _place_error(problem)
    return update_resident(conn, resident_id, changes)


@router.delete("/{resident_id}", status_code=status.HTTP_204_NO_CONTENT)
def forget_resident(conn: ConnDep, _p: Authorized, resident_id: ResidentId) -> None:
    """Delete a resident's personal data; their wearables stay registered, unlinked."""
    delete_resident(conn, resident_id)
