"""``/api/v1/visits``: care workers' visits to residents, visit policies, who is due.

Personal data (names, notes): the family ``visits`` is open to administrators and
operators, as residents are (``core.access``). The database work here is shared
with the CLI (``smartcommunity visits``) and the monthly report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from api.cursors import LimitQuery
from api.deps import ClockDep, ConnDep, SettingsDep, page_size
from api.scope import AlertId, Authorized, community_clause, not_found, unknown_in_body
from core.visits import (
    FOLLOW_UP_DAYS,
    Coverage,
    Month,
    Outcome,
    Policy,
    Standing,
    Visit,
    coverage,
)
from core.visits_sql import IMPORT_CHECKINS

__all__ = [
    "CommunityCoverage",
    "CoveragePublic",
    "VisitIn",
    "VisitPublic",
    "community_coverage",
    "record_visit",
    "router",
    "set_policy",
    "sync_checkins",
]

Conn = psycopg.Connection[Any]
router = APIRouter(prefix="/visits", tags=["visits"])
MonthQuery = Annotated[
    str,
    Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"]),
    AfterValidator(Month.checked),
]
_IN = ConfigDict(frozen=True, extra="forbid")
_OUT = ConfigDict(frozen=True)


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


class VisitPublic(BaseModel):
    model_config = _OUT

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


class VisitsPublic(BaseModel):
    model_config = _OUT

    data: list[VisitPublic]
    next_cursor: int | None


class PolicyIn(BaseModel):
    model_config = _IN

    resident_id: str = Field(min_length=1, max_length=64)
    policy: Policy


class PolicyPublic(BaseModel):
    model_config = _OUT

    resident_id: str
    policy: Policy


class ResidentDue(BaseModel):
    model_config = _OUT

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


class CoveragePublic(BaseModel):
    model_config = _OUT

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


class AlertVisitsPublic(BaseModel):
    model_config = _OUT

    alert_id: int
    device_id: str | None
    resident_id: str | None
    resident_name: str | None
    visits: list[VisitPublic]
    open_follow_ups: list[VisitPublic]


# --- database ------------------------------------------------------------------------------

_VISIT_COLUMNS = (
    "id, community_id, resident_id, worker, started_at, ended_at, outcome, notes, source,"
    " follow_up_due, follow_up_done_at"
)
_VISIT_FIELDS = tuple(c.strip() for c in _VISIT_COLUMNS.split(","))


def _visit(row: tuple[Any, ...]) -> VisitPublic:
    return VisitPublic(**dict(zip(_VISIT_FIELDS, row, strict=True)))


def sync_checkins(conn: Conn) -> int:
    """Copy new ``visit_checkin`` device events into visits; how many were new."""
    cur = conn.execute(IMPORT_CHECKINS.encode())
    return max(cur.rowcount, 0)


def resident_community(conn: Conn, resident_id: str) -> tuple[str, str] | None:
    """(community id, its time zone) of a resident, or None."""
    row = conn.execute(
        "SELECT r.community_id, c.time_zone FROM residents AS r"
        " JOIN communities AS c ON c.id = r.community_id WHERE r.id = %s",
        (resident_id,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def record_visit(
    conn: Conn, community_id: str, time_zone: str, body: VisitIn, source: str
) -> VisitPublic:
    due = body.follow_up_due
    if body.outcome is Outcome.NEEDS_FOLLOW_UP and due is None:
        due = body.started_at.astimezone(ZoneInfo(time_zone)).date() + timedelta(
            days=FOLLOW_UP_DAYS
        )
    if body.outcome is not Outcome.NEEDS_FOLLOW_UP:
        due = None
    row = conn.execute(
        f"INSERT INTO visits (community_id, resident_id, worker, started_at, ended_at, outcome,"  # noqa: S608 - constant column list
        " notes, source, follow_up_due) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_VISIT_COLUMNS}",
        (
            community_id,
            body.resident_id,
            body.worker,
            body.started_at,
            body.ended_at,
            body.outcome.value,
            body.notes,
            source,
            due,
        ),
    ).fetchone()
    assert row is not None
    return _visit(row)


def set_policy(conn: Conn, resident_id: str, policy: Policy) -> None:
    conn.execute(
        "UPDATE residents SET visit_policy = %s, updated_at = now() WHERE id = %s",
        (policy.value, resident_id),
    )


@dataclass(frozen=True, slots=True)
class CommunityCoverage:
    """Coverage plus what a list of people needs beside ids."""

    community_id: str
    time_zone: str
    deadline_day: int
    as_of: datetime
    coverage: Coverage
    people: dict[str, tuple[str, str | None, str | None]]  # id -> name, building, unit


def community_coverage(
    conn: Conn, community_id: str, month: Month, now: datetime
) -> CommunityCoverage | None:
    """The month's coverage of a community as of ``now``; None: no such community."""
    found = conn.execute(
        "SELECT time_zone, visit_deadline_day FROM communities WHERE id = %s", (community_id,)
    ).fetchone()
    if found is None:
        return None
    time_zone, deadline = str(found[0]), int(found[1])
    tz = ZoneInfo(time_zone)
    start, end = month.bounds(tz)
    people: dict[str, tuple[str, str | None, str | None]] = {}
    residents: list[tuple[str, Policy]] = []
    for rid, name, building, unit, policy in conn.execute(
        "SELECT id, name, building, unit, visit_policy FROM residents"
        " WHERE community_id = %s AND visit_policy <> 'none'",
        (community_id,),
    ):
        people[rid] = (name, building, unit)
        residents.append((rid, Policy(policy)))
    visits = [
        Visit(rid, started, Outcome(outcome))
        for rid, started, outcome in conn.execute(
            "SELECT resident_id, started_at, outcome FROM visits"
            " WHERE community_id = %s AND started_at >= %s AND started_at < %s",
            (community_id, start, end),
        )
    ]
    return CommunityCoverage(
        community_id=community_id,
        time_zone=time_zone,
        deadline_day=deadline,
        as_of=now,
        coverage=coverage(residents, visits, month, tz, now, deadline),
        people=people,
    )


def coverage_public(found: CommunityCoverage) -> CoveragePublic:
    cov = found.coverage

    def listed(*standings: Standing) -> list[ResidentDue]:
        out = []
        for s in cov.with_standing(*standings):
            name, building, unit = found.people[s.resident_id]
            out.append(
                ResidentDue(
                    resident_id=s.resident_id,
                    name=name,
                    building=building,
                    unit=unit,
                    policy=s.policy,
                    standing=s.standing,
                    visits=s.visits,
                    attempts=s.attempts,
                    last_visit=s.last_visit,
                    missed_weeks=list(s.missed_weeks),
                )
            )
        return out

    return CoveragePublic(
        community_id=found.community_id,
        month=str(cov.month),
        time_zone=found.time_zone,
        deadline_day=found.deadline_day,
        as_of=found.as_of,
        residents=cov.residents,
        visited=cov.visited,
        visit_rate=cov.visit_rate,
        policy_met=cov.policy_met,
        policy_met_rate=cov.policy_met_rate,
        due=listed(Standing.DUE),
        overdue=listed(Standing.OVERDUE),
        missed=listed(Standing.MISSED),
    )


# --- routes --------------------------------------------------------------------------------


def _visible_resident(conn: Conn, principal: Authorized, resident_id: str) -> tuple[str, str]:
    found = resident_community(conn, resident_id)
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
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", "ended_at"],
                    "msg": "a visit ends after it starts",
                    "type": "value_error",
                }
            ],
        )
    return record_visit(conn, community_id, time_zone, body, "api")


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
    sync_checkins(conn)
    size = page_size(settings, limit)
    scope, params = community_clause(principal, "v.community_id")
    where = [scope]
    if after is not None:
        where.append("v.id < %s")
        params.append(after)
    if community_id is not None:
        where.append("v.community_id = %s")
        params.append(community_id)
    if resident_id is not None:
        where.append("v.resident_id = %s")
        params.append(resident_id)
    if month is not None:
        where.append(
            "v.started_at >= (%s::date::timestamp AT TIME ZONE c.time_zone)"
            " AND v.started_at < ((%s::date + interval '1 month')::timestamp"
            " AT TIME ZONE c.time_zone)"
        )
        first = f"{month}-01"
        params += [first, first]
    columns = ", ".join(f"v.{c}" for c in _VISIT_FIELDS)
    query = (
        f"SELECT {columns} FROM visits AS v JOIN communities AS c ON c.id = v.community_id"  # noqa: S608 - constant clauses, values are parameters
        f" WHERE {' AND '.join(where)} ORDER BY v.id DESC LIMIT %s"
    )
    rows = [_visit(r) for r in conn.execute(query.encode(), [*params, size + 1])]
    more = len(rows) > size
    rows = rows[:size]
    return VisitsPublic(data=rows, next_cursor=rows[-1].id if more else None)


@router.post("/policy")
def change_policy(conn: ConnDep, principal: Authorized, body: PolicyIn) -> PolicyPublic:
    """Put a resident in the visit programme (monthly, weekly) or take them out (none)."""
    _visible_resident(conn, principal, body.resident_id)
    set_policy(conn, body.resident_id, body.policy)
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
    sync_checkins(conn)
    now = clock()
    if month is None:
        tz_row = conn.execute(
            "SELECT time_zone FROM communities WHERE id = %s", (community_id,)
        ).fetchone()
        if tz_row is None:
            raise not_found(f"no community {community_id!r}")
        chosen = Month.of(now, ZoneInfo(tz_row[0]))
    else:
        chosen = Month.parse(month)
    found = community_coverage(conn, community_id, chosen, now)
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
    sync_checkins(conn)
    size = page_size(settings, limit)
    scope, params = community_clause(principal)
    where = [scope, "follow_up_due IS NOT NULL", "follow_up_done_at IS NULL"]
    if community_id is not None:
        where.append("community_id = %s")
        params.append(community_id)
    query = (
        f"SELECT {_VISIT_COLUMNS} FROM visits WHERE {' AND '.join(where)}"  # noqa: S608 - constant clauses
        " ORDER BY follow_up_due, id LIMIT %s"
    )
    rows = [_visit(r) for r in conn.execute(query.encode(), [*params, size])]
    return VisitsPublic(data=rows, next_cursor=None)


# How many of a resident's visits an alert shows: the last few tell the responder enough.
ALERT_VISITS = 10


@router.get("/alerts/{alert_id}")
def alert_visits(conn: ConnDep, _p: Authorized, alert_id: AlertId) -> AlertVisitsPublic:
    """The resident behind an alert (their wearable's ``resident_id``) and their visits."""
    row = conn.execute(
        "SELECT a.device_id, r.id, r.name FROM alerts AS a"
        " LEFT JOIN devices AS d ON d.id = a.device_id"
        " LEFT JOIN residents AS r ON r.id = d.resident_id WHERE a.id = %s",
        (alert_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"no alert {alert_id}")
    device_id, resident_id, name = row
    recent: list[VisitPublic] = []
    open_tasks: list[VisitPublic] = []
    if resident_id is not None:
        sync_checkins(conn)
        recent = [
            _visit(r)
            for r in conn.execute(
                f"SELECT {_VISIT_COLUMNS} FROM visits WHERE resident_id = %s"  # noqa: S608 - constant column list
                " ORDER BY started_at DESC LIMIT %s",
                (resident_id, ALERT_VISITS),
            )
        ]
        open_tasks = [
            _visit(r)
            for r in conn.execute(
                f"SELECT {_VISIT_COLUMNS} FROM visits WHERE resident_id = %s"  # noqa: S608 - constant column list
                " AND follow_up_due IS NOT NULL AND follow_up_done_at IS NULL"
                " ORDER BY follow_up_due",
                (resident_id,),
            )
        ]
    return AlertVisitsPublic(
        alert_id=alert_id,
        device_id=device_id,
        resident_id=resident_id,
        resident_name=name,
        visits=recent,
        open_follow_ups=open_tasks,
    )
