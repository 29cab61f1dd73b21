"""``/api/v1/visits``: care workers' visits to residents, visit policies, who is due.

Personal data (names, notes): the family ``visits`` is open to administrators and
operators, as residents are (``core.access``). The statements are
``store/visits.py``'s, shared with the CLI (``smartcommunity visits``), the engine's
visit check and the monthly report.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from api.cursors import LimitQuery
from api.deps import ClockDep, ConnDep, SettingsDep, page_size
from api.problems import body_error
from api.schemas import Public
from api.scope import AlertId, Authorized, not_found, unknown_in_body
from core.visits import Month, Outcome, Policy, Standing
from store import visits as visits_store

__all__ = ["CoveragePublic", "VisitIn", "VisitPublic", "coverage_public", "router"]

Conn = psycopg.Connection[Any]
router = APIRouter(prefix="/visits", tags=["visits"])
MonthQuery = Annotated[
    str,
    Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"]),
    AfterValidator(Month.checked),
]
_IN = ConfigDict(frozen=True, extra="forbid")


# --- schemas -----------------------------------------------------------------------------


class VisitIn(BaseModel):
    model_config = _IN

    resident_id: str = Field(min_length=1, max_length=64)
    worker: str = Field(min_length=1, max_length=64)
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    outcome: Outcome
    notes: str = Field(default="", max_length=2000)
    # Only with outcome needs_follow_up; default: FOLLOW_UP_DAYS after the visit.
    follow_up_due: date | None = None


class VisitPublic(Public):
    id: int
    community_id: str
    resident_id: str
    worker: str
    started_at: datetime
    ended_at: datetime | None
    outcome: Outcome
    notes: str
    source: str
    follow_up_due: date | None
    follow_up_done_at: datetime | None


class VisitsPublic(Public):
    data: list[VisitPublic]
    next_cursor: int | None


class PolicyIn(BaseModel):
    model_config = _IN

    resident_id: str = Field(min_length=1, max_length=64)
    policy: Policy


class PolicyPublic(Public):
    resident_id: str
    policy: Policy


class ResidentDue(Public):
    resident_id: str
    name: str
    building: str | None
    unit: str | None
    policy: Policy
    standing: Standing
    visits: int
    attempts: int
    last_visit: datetime | None
    missed_weeks: list[date]


class CoveragePublic(Public):
    community_id: str
    month: str
    time_zone: str
    deadline_day: int
    as_of: datetime
    residents: int = Field(description="Residents under a visit policy")
    visited: int = Field(description="Visited at least once in the month")
    visit_rate: float | None = Field(description="visited / residents: the city's KPI")
    policy_met: int
    policy_met_rate: float | None
    due: list[ResidentDue]
    overdue: list[ResidentDue]
    missed: list[ResidentDue]


class AlertVisitsPublic(Public):
    alert_id: int
    device_id: str | None
    resident_id: str | None
    resident_name: str | None
    visits: list[VisitPublic]
    open_follow_ups: list[VisitPublic]


# --- records to answers -----------------------------------------------------------------


def _visit(record: visits_store.VisitRecord) -> VisitPublic:
    return VisitPublic.model_validate(record, from_attributes=True)


def coverage_public(found: visits_store.CommunityCoverage) -> CoveragePublic:
    cov = found.coverage

    def listed(*standings: Standing) -> list[ResidentDue]:
        out = []
        for s in cov.with_standing(*standings):
            name, building, unit = found.people[s.resident_id]
            person = {"name": name, "building": building, "unit": unit}
            out.append(ResidentDue.model_validate(asdict(s) | person))
        return out

    figures = {name: getattr(cov, name) for name in _COVERAGE_FIGURES}
    return CoveragePublic(
        community_id=found.community_id,
        month=str(cov.month),
        time_zone=found.time_zone,
        deadline_day=found.deadline_day,
        as_of=found.as_of,
        **figures,
        due=listed(Standing.DUE),
        overdue=listed(Standing.OVERDUE),
        missed=listed(Standing.MISSED),
    )


_COVERAGE_FIGURES = ("residents", "visited", "visit_rate", "policy_met", "policy_met_rate")


# --- routes --------------------------------------------------------------------------------


def _visible_resident(conn: Conn, principal: Authorized, resident_id: str) -> tuple[str, str]:
    found = visits_store.resident_community(conn, resident_id)
    if found is None or not principal.sees(found[0]):
        raise unknown_in_body("resident_id", resident_id)
    return found


def _visible_community(principal: Authorized, community_id: str) -> None:
    if not principal.sees(community_id):
        raise not_found(f"no community {community_id!r}")


@router.post("", status_code=status.HTTP_201_CREATED)
def add_visit(conn: ConnDep, principal: Authorized, body: VisitIn) -> VisitPublic:
    """Record a visit. ``needs_follow_up`` opens a follow-up task (``follow_up_due``); the
    resident's next visit that sees them closes it."""
    community_id, time_zone = _visible_resident(conn, principal, body.resident_id)
    if body.ended_at is not None and body.ended_at < body.started_at:
        raise body_error("ended_at", "a visit ends after it starts")
    return _visit(
        visits_store.record_visit(conn, community_id, time_zone, **dict(body), source="api")
    )


@router.get("")
def visits(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
    resident_id: Annotated[str | None, Query(max_length=64)] = None,
    month: MonthQuery | None = None,
    limit: LimitQuery = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> VisitsPublic:
    """Visits, newest first, in the caller's communities."""
    visits_store.import_checkins(conn)
    size = page_size(settings, limit)
    found = visits_store.list_visits(
        conn,
        principal.communities,
        limit=size + 1,
        before_id=after,
        community_id=community_id,
        resident_id=resident_id,
        month=Month.parse(month) if month is not None else None,
    )
    rows = [_visit(r) for r in found[:size]]
    more = len(found) > size
    return VisitsPublic(data=rows, next_cursor=rows[-1].id if more else None)


@router.post("/policy")
def change_policy(conn: ConnDep, principal: Authorized, body: PolicyIn) -> PolicyPublic:
    """Put a resident in the visit programme (monthly, weekly) or take them out (none)."""
    _visible_resident(conn, principal, body.resident_id)
    visits_store.set_policy(conn, body.resident_id, body.policy)
    return PolicyPublic(resident_id=body.resident_id, policy=body.policy)


@router.get("/coverage")
def visit_coverage(
    conn: ConnDep,
    principal: Authorized,
    clock: ClockDep,
    community_id: Annotated[str, Query(max_length=64)],
    month: MonthQuery | None = None,
) -> CoveragePublic:
    """The month's visit rate against the policies, and who is due, overdue or missed."""
    _visible_community(principal, community_id)
    visits_store.import_checkins(conn)
    chosen = Month.parse(month) if month is not None else None
    found = visits_store.community_coverage(conn, community_id, chosen, clock())
    if found is None:
        raise not_found(f"no community {community_id!r}")
    return coverage_public(found)


@router.get("/follow-ups")
def follow_ups(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: LimitQuery = None,
) -> VisitsPublic:
    """Open follow-up tasks (visits with outcome ``needs_follow_up`` not yet followed up),
    soonest due first."""
    visits_store.import_checkins(conn)
    size = page_size(settings, limit)
    found = visits_store.follow_ups(
        conn, principal.communities, community_id=community_id, limit=size
    )
    return VisitsPublic(data=[_visit(r) for r in found], next_cursor=None)


# How many of a resident's visits an alert shows: the last few tell the responder enough.
ALERT_VISITS = 10


@router.get("/alerts/{alert_id}")
def alert_visits(conn: ConnDep, _p: Authorized, alert_id: AlertId) -> AlertVisitsPublic:
    """The resident behind an alert (their wearable's ``resident_id``) and their visits."""
    row = visits_store.alert_resident(conn, alert_id)
    if row is None:
        raise not_found(f"no alert {alert_id}")
    wearer = dict(zip(("device_id", "resident_id", "resident_name"), row, strict=True))
    resident_id = wearer["resident_id"]
    recent: list[VisitPublic] = []
    open_tasks: list[VisitPublic] = []
    if resident_id is not None:
        visits_store.import_checkins(conn)
        recent = [_visit(r) for r in visits_store.recent_visits(conn, resident_id, ALERT_VISITS)]
        open_tasks = [_visit(r) for r in visits_store.open_follow_ups(conn, resident_id)]
    return AlertVisitsPublic(alert_id=alert_id, **wearer, visits=recent, open_follow_ups=open_tasks)
