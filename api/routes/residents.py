"""``/api/v1/residents``: people in elderly care. Administrators and operators only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from api.answers import found_or_404, made_or_409
from api.cursors import LimitQuery, id_page
from api.deps import ConnDep, SettingsDep, page_size
from api.registry_schemas import ResidentPublic, ResidentsPublic
from api.scope import Authorized, ResidentId, body_community
from core.registry import ResidentPatch, ResidentSpec, changed_fields
from store.places import place_problem
from store.residents import (
    ResidentRecord,
    create_resident,
    delete_resident,
    get_resident,
    list_residents,
    update_resident,
)

__all__ = ["router"]

router = APIRouter(prefix="/residents", tags=["residents"])


def _public(record: ResidentRecord) -> ResidentPublic:
    return ResidentPublic.model_validate(record, from_attributes=True)


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
    created = made_or_409(create_resident(conn, body), f"resident {body.id!r} already exists")
    return _public(created)


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
    rows = list_residents(
        conn,
        within=principal.communities,
        community_id=community_id,
        after=after,
        limit=size + 1,
    )
    data, cursor = id_page(rows, size, _public)
    return ResidentsPublic(data=data, next_cursor=cursor)


@router.get("/{resident_id}")
def resident(conn: ConnDep, _p: Authorized, resident_id: ResidentId) -> ResidentPublic:
    found = found_or_404(get_resident(conn, resident_id), f"no resident {resident_id!r}")
    return _public(found)


@router.patch("/{resident_id}")
def change_resident(
    conn: ConnDep, _p: Authorized, resident_id: ResidentId, body: ResidentPatch
) -> ResidentPublic:
    current = found_or_404(get_resident(conn, resident_id), f"no resident {resident_id!r}")
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
    return _public(update_resident(conn, resident_id, changes))


@router.delete("/{resident_id}", status_code=status.HTTP_204_NO_CONTENT)
def forget_resident(conn: ConnDep, _p: Authorized, resident_id: ResidentId) -> None:
    """Delete a resident's personal data; their wearables stay registered, unlinked."""
    delete_resident(conn, resident_id)
