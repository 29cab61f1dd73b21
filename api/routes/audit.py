"""``/api/v1/audit``: who changed what and when, with the row before and after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from api.cursors import LimitQuery, filters_of, id_page
from api.deps import ConnDep, SettingsDep, page_size
from api.registry_schemas import AuditEntriesPublic, AuditEntryPublic
from api.scope import Authorized
from store.audit import audit_entries

__all__ = ["router"]

router = APIRouter(prefix="/audit", tags=["audit"])

Short = Annotated[str | None, Query(max_length=200)]


@dataclass(frozen=True, slots=True)
class _AuditQuery:
    """The log's filters and page (a dependency: FastAPI reads the fields from the query)."""

    entity: Annotated[str | None, Query(description="device, rule, user, alert, ...")] = None
    entity_id: Short = None
    community_id: Short = None
    actor: Short = None
    since: AwareDatetime | None = None
    limit: LimitQuery = None
    after: Annotated[int | None, Query(ge=0, description="next_cursor of the previous page")] = None


@router.get("")
def audit_log(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    query: Annotated[_AuditQuery, Depends()],
) -> AuditEntriesPublic:
    """Changes, newest first. Administrators of some communities see theirs; changes to
    users, tokens and rules (no community) only administrators of every community."""
    size = page_size(settings, query.limit)
    found = audit_entries(
        conn,
        principal.communities,
        limit=size + 1,
        before_id=query.after,
        **filters_of(query),
    )
    rows, cursor = id_page(
        found, size, lambda e: AuditEntryPublic.model_validate(e, from_attributes=True)
    )
    return AuditEntriesPublic(data=rows, next_cursor=cursor)
