"""``/api/v1/responders``, ``/teams``, ``/communities/{id}/duty``: who can be sent, and
who is on duty now (docs/incidents.md).

Names and phone numbers: the family ``responders`` is read by administrators and
operators (the control room sends people) and changed by administrators.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from api.deps import ClockDep, ConnDep
from api.scope import (
    Authorized,
    CommunityId,
    ResponderId,
    TeamId,
    body_community,
    community_clause,
    not_found,
    unknown_in_body,
)
from store.rosters import duty_teams, team_duty

__all__ = ["duty_board", "router", "teams_router"]

Conn = psycopg.Connection[Any]
router = APIRouter(prefix="/responders", tags=["responders"])
teams_router = APIRouter(prefix="/teams", tags=["responders"])
duty_router = APIRouter(prefix="/communities", tags=["responders"])
_IN = ConfigDict(frozen=True, extra="forbid")
_OUT = ConfigDict(frozen=True)


def _wall_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a time of day in the community's zone, without an offset")
    return value


# A shift's times of day are the community's wall clock: no offset, which OpenAPI's
# "time" format (RFC 3339) would demand of every answer.
WallClock = Annotated[
    time,
    AfterValidator(_wall_clock),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$",
            "examples": ["08:00", "20:00:00"],
        }
    ),
]
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

ResponderRole = Literal[
    "micro_fire_station", "grid_worker", "care_worker", "guard", "property_manager"
]
TeamKind = Literal["micro_fire_station", "grid", "care", "security", "property"]


class ResponderIn(BaseModel):
    model_config = _IN

    id: str = Field(pattern=_ID)
    community_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    role: ResponderRole
    phone: str = Field(default="", max_length=40, pattern=r"^[0-9+ ()-]*$")
    mqtt_username: str | None = Field(default=None, pattern=_ID)
    user_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


class ResponderPublic(BaseModel):
    model_config = _OUT

    id: str
    community_id: str
    name: str
    role: str
    phone: str
    mqtt_username: str | None
    user_id: int | None


class RespondersPublic(BaseModel):
    model_config = _OUT

    data: list[ResponderPublic]


class TeamIn(BaseModel):
    model_config = _IN

    id: str = Field(pattern=_ID)
    community_id: str = Field(min_length=1, max_length=64)
    building_id: str | None = Field(default=None, pattern=_ID)
    name: str = Field(min_length=1, max_length=200)
    kind: TeamKind
    leader_id: str | None = Field(default=None, pattern=_ID)


class ShiftIn(BaseModel):
    model_config = _IN

    responder_id: str = Field(pattern=_ID)
    weekdays: list[int] = Field(min_length=1, max_length=7, description="0 Monday .. 6 Sunday")
    starts: WallClock
    ends: WallClock = Field(description="Not after starts: the shift runs past midnight")


class ShiftPublic(BaseModel):
    model_config = _OUT

    id: int
    responder_id: str
    weekday: int
    starts: WallClock
    ends: WallClock


class ExceptionIn(BaseModel):
    model_config = _IN

    kind: Literal["leave", "swap"]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    substitute_id: str | None = Field(default=None, pattern=_ID)


class ExceptionPublic(BaseModel):
    model_config = _OUT

    id: int
    responder_id: str
    kind: str
    starts_at: datetime
    ends_at: datetime
    substitute_id: str | None


class TeamPublic(BaseModel):
    model_config = _OUT

    id: str
    community_id: str
    building_id: str | None
    name: str
    kind: str
    leader_id: str | None
    shifts: list[ShiftPublic]
    on_duty: list[str]
    # The first moment in the next 24 h with nobody on duty (a warning on the board).
    uncovered_at: datetime | None


class TeamsPublic(BaseModel):
    model_config = _OUT

    data: list[TeamPublic]


class DutyPublic(BaseModel):
    model_config = _OUT

    community_id: str
    as_of: datetime
    teams: list[TeamPublic]
    responders: list[ResponderPublic]


# --- database ------------------------------------------------------------------------------

_RESPONDER = "SELECT id, community_id, name, role, phone, mqtt_username, user_id FROM responders"


def _responder(row: tuple[Any, ...]) -> ResponderPublic:
    keys = ("id", "community_id", "name", "role", "phone", "mqtt_username", "user_id")
    return ResponderPublic(**dict(zip(keys, row, strict=True)))


def _team(conn: Conn, row: tuple[Any, ...], now: datetime) -> TeamPublic:
    return TeamPublic.model_validate(team_duty(conn, row, now), from_attributes=True)


_TEAM = "SELECT id, community_id, building_id, name, kind, leader_id FROM teams"


def duty_board(conn: Conn, community_id: str, now: datetime) -> DutyPublic:
    teams = [
        TeamPublic.model_validate(t, from_attributes=True)
        for t in duty_teams(conn, community_id, now)
    ]
    people = [
        _responder(r)
        for r in conn.execute(
            (_RESPONDER + " WHERE community_id = %s ORDER BY id").encode(), (community_id,)
        )
    ]
    return DutyPublic(community_id=community_id, as_of=now, teams=teams, responders=people)


def _same_community(conn: Conn, community: str, field: str, responder: str | None) -> None:
    """A responder named in a body must be of the object's community (else: unknown)."""
    if responder is None:
        return
    row = conn.execute("SELECT community_id FROM responders WHERE id = %s", (responder,)).fetchone()
    if row is None or row[0] != community:
        raise unknown_in_body(field, responder)


# --- routes --------------------------------------------------------------------------------


@router.get("")
def list_responders(
    conn: ConnDep,
    principal: Authorized,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
) -> RespondersPublic:
    scope, params = community_clause(principal)
    where = [scope]
    if community_id is not None:
        where.append("community_id = %s")
        params.append(community_id)
    query = f"{_RESPONDER} WHERE {' AND '.join(where)} ORDER BY id LIMIT 1000"
    return RespondersPublic(data=[_responder(r) for r in conn.execute(query.encode(), params)])


@router.post("", status_code=status.HTTP_201_CREATED)
def add_responder(
    conn: ConnDep, principal: Authorized, request: Request, body: ResponderIn
) -> ResponderPublic:
    """A person who can be sent: role, phone, optionally an MQTT login and an API user
    (of role ``responder``, who then sees the incidents sent to them)."""
    body_community(conn, principal, request, body.community_id)
    if body.user_id is not None:
        row = conn.execute(
            "SELECT role FROM users AS u WHERE id = %s AND EXISTS (SELECT 1 FROM"
            " user_communities AS c WHERE c.user_id = u.id AND c.community_id = %s)",
            (body.user_id, body.community_id),
        ).fetchone()
        if row is None:
            raise unknown_in_body("user_id", str(body.user_id))
    row = conn.execute(
        "INSERT INTO responders (id, community_id, name, role, phone, mqtt_username, user_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        " RETURNING id, community_id, name, role, phone, mqtt_username, user_id",
        (
            body.id,
            body.community_id,
            body.name,
            body.role,
            body.phone,
            body.mqtt_username,
            body.user_id,
        ),
    ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="responder id, login or user taken")
    return _responder(row)


@router.get("/{responder_id}")
def get_responder(conn: ConnDep, _p: Authorized, responder_id: ResponderId) -> ResponderPublic:
    row = conn.execute((_RESPONDER + " WHERE id = %s").encode(), (responder_id,)).fetchone()
    if row is None:
        raise not_found(f"no responder {responder_id!r}")
    return _responder(row)


@router.post("/{responder_id}/exceptions", status_code=status.HTTP_201_CREATED)
def add_exception(
    conn: ConnDep, _p: Authorized, responder_id: ResponderId, body: ExceptionIn
) -> ExceptionPublic:
    """Leave (off their shifts) or a swap (``substitute_id`` works them) for an interval."""
    if body.ends_at <= body.starts_at or (body.kind == "swap") != (body.substitute_id is not None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body"],
                    "msg": "ends_at after starts_at; a substitute for a swap only",
                    "type": "value_error",
                }
            ],
        )
    row = conn.execute("SELECT community_id FROM responders WHERE id = %s", (responder_id,))
    found = row.fetchone()
    if found is None:
        raise not_found(f"no responder {responder_id!r}")
    _same_community(conn, found[0], "substitute_id", body.substitute_id)
    made = conn.execute(
        "INSERT INTO roster_exceptions (community_id, responder_id, kind, starts_at, ends_at,"
        " substitute_id) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (found[0], responder_id, body.kind, body.starts_at, body.ends_at, body.substitute_id),
    ).fetchone()
    assert made is not None
    return ExceptionPublic(
        id=made[0],
        responder_id=responder_id,
        kind=body.kind,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        substitute_id=body.substitute_id,
    )


@teams_router.get("")
def list_teams(
    conn: ConnDep,
    principal: Authorized,
    clock: ClockDep,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
) -> TeamsPublic:
    scope, params = community_clause(principal)
    where = [scope]
    if community_id is not None:
        where.append("community_id = %s")
        params.append(community_id)
    query = f"{_TEAM} WHERE {' AND '.join(where)} ORDER BY id LIMIT 500"
    now = clock()
    rows = conn.execute(query.encode(), params).fetchall()
    return TeamsPublic(data=[_team(conn, r, now) for r in rows])


@teams_router.post("", status_code=status.HTTP_201_CREATED)
def add_team(
    conn: ConnDep, principal: Authorized, request: Request, clock: ClockDep, body: TeamIn
) -> TeamPublic:
    """A team of a community, or of one of its buildings (``building_id``)."""
    body_community(conn, principal, request, body.community_id)
    _same_community(conn, body.community_id, "leader_id", body.leader_id)
    if (
        body.building_id is not None
        and not conn.execute(
            "SELECT 1 FROM buildings WHERE community_id = %s AND id = %s",
            (body.community_id, body.building_id),
        ).fetchone()
    ):
        raise unknown_in_body("building_id", body.building_id)
    row = conn.execute(
        "INSERT INTO teams (id, community_id, building_id, name, kind, leader_id)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        " RETURNING id, community_id, building_id, name, kind, leader_id",
        (body.id, body.community_id, body.building_id, body.name, body.kind, body.leader_id),
    ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"team {body.id!r} exists")
    return _team(conn, row, clock())


@teams_router.get("/{team_id}")
def get_team(conn: ConnDep, _p: Authorized, clock: ClockDep, team_id: TeamId) -> TeamPublic:
    """The team, its shifts, who is on duty now and the next gap in the roster."""
    row = conn.execute((_TEAM + " WHERE id = %s").encode(), (team_id,)).fetchone()
    if row is None:
        raise not_found(f"no team {team_id!r}")
    return _team(conn, row, clock())


@teams_router.post("/{team_id}/shifts", status_code=status.HTTP_201_CREATED)
def add_shifts(
    conn: ConnDep, _p: Authorized, clock: ClockDep, team_id: TeamId, body: ShiftIn
) -> TeamPublic:
    """Put a responder on the team's roster on these weekdays, from ``starts`` to ``ends``
    (local time of the community)."""
    if any(not 0 <= d <= 6 for d in body.weekdays):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": ["body", "weekdays"], "msg": "0 to 6", "type": "value_error"}],
        )
    row = conn.execute((_TEAM + " WHERE id = %s").encode(), (team_id,)).fetchone()
    if row is None:
        raise not_found(f"no team {team_id!r}")
    _same_community(conn, row[1], "responder_id", body.responder_id)
    for weekday in sorted(set(body.weekdays)):
        conn.execute(
            "INSERT INTO shifts (community_id, team_id, responder_id, weekday, starts, ends)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                row[1],
                team_id,
                body.responder_id,
                weekday,
                body.starts.replace(tzinfo=None),
                body.ends.replace(tzinfo=None),
            ),
        )
    return _team(conn, row, clock())


@duty_router.get("/{community_id}/duty")
def duty(conn: ConnDep, _p: Authorized, clock: ClockDep, community_id: CommunityId) -> DutyPublic:
    """Who is on duty now in each team, and each team's next gap (nobody on duty)."""
    return duty_board(conn, community_id, clock())
