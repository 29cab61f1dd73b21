"""``/api/v1/responders``, ``/teams``, ``/communities/{id}/duty``: who can be sent, and
who is on duty now (docs/incidents.md).

Names and phone numbers: the family ``responders`` is read by administrators and
operators (the control room sends people) and changed by administrators.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query, Request, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from api.answers import found_or_404, made_or_409
from api.deps import ClockDep, ConnDep
from api.problems import body_error, unprocessable
from api.schemas import Public
from api.scope import (
    Authorized,
    CommunityId,
    ResponderId,
    TeamId,
    body_community,
    not_found,
    unknown_in_body,
)
from store import rosters
from store.accounts import is_member
from store.places import place_problem

__all__ = ["router", "teams_router"]

Conn = psycopg.Connection[Any]
router = APIRouter(prefix="/responders", tags=["responders"])
teams_router = APIRouter(prefix="/teams", tags=["responders"])
duty_router = APIRouter(prefix="/communities", tags=["responders"])
_IN = ConfigDict(frozen=True, extra="forbid")
# One page: a community has tens of responders and a handful of teams.
MAX_RESPONDERS = 1000
MAX_TEAMS = 500


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


class ResponderPublic(Public):
    id: str
    community_id: str
    name: str
    role: str
    phone: str
    mqtt_username: str | None
    user_id: int | None


class RespondersPublic(Public):
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


class ShiftPublic(Public):
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


class ExceptionPublic(Public):
    id: int
    responder_id: str
    kind: str
    starts_at: datetime
    ends_at: datetime
    substitute_id: str | None


class TeamPublic(Public):
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


class TeamsPublic(Public):
    data: list[TeamPublic]


class DutyPublic(Public):
    community_id: str
    as_of: datetime
    teams: list[TeamPublic]
    responders: list[ResponderPublic]


def _same_community(conn: Conn, community: str, field: str, responder: str | None) -> None:
    """A responder named in a body must be of the object's community (else: unknown)."""
    if responder is not None and rosters.responder_community(conn, responder) != community:
        raise unknown_in_body(field, responder)


def _duty(board: rosters.DutyBoard) -> DutyPublic:
    return DutyPublic.model_validate(board, from_attributes=True)


def _team(team: rosters.TeamRecord) -> TeamPublic:
    return TeamPublic.model_validate(team, from_attributes=True)


def _responder(responder: rosters.ResponderRecord) -> ResponderPublic:
    return ResponderPublic.model_validate(responder, from_attributes=True)


def _team_or_404(conn: Conn, team_id: str, now: datetime) -> rosters.TeamRecord:
    found = found_or_404(rosters.get_team(conn, team_id, now), f"no team {team_id!r}")
    return found


# --- routes --------------------------------------------------------------------------------


@router.get("")
def list_responders(
    conn: ConnDep,
    principal: Authorized,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
) -> RespondersPublic:
    found = rosters.list_responders(
        conn, within=principal.communities, community_id=community_id, limit=MAX_RESPONDERS
    )
    return RespondersPublic(data=[_responder(r) for r in found])


@router.post("", status_code=status.HTTP_201_CREATED)
def add_responder(
    conn: ConnDep, principal: Authorized, request: Request, body: ResponderIn
) -> ResponderPublic:
    """A person who can be sent: role, phone, optionally an MQTT login and an API user
    (of role ``responder``, who then sees the incidents sent to them)."""
    body_community(conn, principal, request, body.community_id)
    if body.user_id is not None and not is_member(conn, body.user_id, body.community_id):
        raise unknown_in_body("user_id", str(body.user_id))
    created = made_or_409(
        rosters.create_responder(conn, rosters.ResponderRecord(**body.model_dump())),
        "responder id, login or user taken",
    )
    return _responder(created)


@router.get("/{responder_id}")
def get_responder(conn: ConnDep, _p: Authorized, responder_id: ResponderId) -> ResponderPublic:
    found = rosters.get_responder(conn, responder_id)
    if found is None:
        raise not_found(f"no responder {responder_id!r}")
    return _responder(found)


@router.post("/{responder_id}/exceptions", status_code=status.HTTP_201_CREATED)
def add_exception(
    conn: ConnDep, _p: Authorized, responder_id: ResponderId, body: ExceptionIn
) -> ExceptionPublic:
    """Leave (off their shifts) or a swap (``substitute_id`` works them) for an interval."""
    if body.ends_at <= body.starts_at or (body.kind == "swap") != (body.substitute_id is not None):
        raise unprocessable(("body",), "ends_at after starts_at; a substitute for a swap only")
    community = rosters.responder_community(conn, responder_id)
    if community is None:
        raise not_found(f"no responder {responder_id!r}")
    _same_community(conn, community, "substitute_id", body.substitute_id)
    made = rosters.add_exception(
        conn, community, responder_id, body.kind, body.starts_at, body.ends_at, body.substitute_id
    )
    return ExceptionPublic(id=made, responder_id=responder_id, **dict(body))


@teams_router.get("")
def list_teams(
    conn: ConnDep,
    principal: Authorized,
    clock: ClockDep,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
) -> TeamsPublic:
    found = rosters.list_teams(
        conn,
        within=principal.communities,
        community_id=community_id,
        now=clock(),
        limit=MAX_TEAMS,
    )
    return TeamsPublic(data=[_team(t) for t in found])


@teams_router.post("", status_code=status.HTTP_201_CREATED)
def add_team(
    conn: ConnDep, principal: Authorized, request: Request, clock: ClockDep, body: TeamIn
) -> TeamPublic:
    """A team of a community, or of one of its buildings (``building_id``)."""
    body_community(conn, principal, request, body.community_id)
    _same_community(conn, body.community_id, "leader_id", body.leader_id)
    if body.building_id is not None and place_problem(
        conn, body.community_id, body.building_id, None
    ):
        raise unknown_in_body("building_id", body.building_id)
    created = made_or_409(
        rosters.create_team(
            conn,
            body.id,
            body.community_id,
            body.building_id,
            body.name,
            body.kind,
            body.leader_id,
            clock(),
        ),
        f"team {body.id!r} exists",
    )
    return _team(created)


@teams_router.get("/{team_id}")
def get_team(conn: ConnDep, _p: Authorized, clock: ClockDep, team_id: TeamId) -> TeamPublic:
    """The team, its shifts, who is on duty now and the next gap in the roster."""
    return _team(_team_or_404(conn, team_id, clock()))


@teams_router.post("/{team_id}/shifts", status_code=status.HTTP_201_CREATED)
def add_shifts(
    conn: ConnDep, _p: Authorized, clock: ClockDep, team_id: TeamId, body: ShiftIn
) -> TeamPublic:
    """Put a responder on the team's roster on these weekdays, from ``starts`` to ``ends``
    (local time of the community)."""
    if any(not 0 <= d <= 6 for d in body.weekdays):
        raise body_error("weekdays", "0 to 6")
    now = clock()
    team = _team_or_404(conn, team_id, now)
    _same_community(conn, team.community_id, "responder_id", body.responder_id)
    rosters.add_shifts(
        conn,
        team,
        body.responder_id,
        body.weekdays,
        body.starts.replace(tzinfo=None),
        body.ends.replace(tzinfo=None),
    )
    return _team(_team_or_404(conn, team_id, now))


@duty_router.get("/{community_id}/duty")
def duty(conn: ConnDep, _p: Authorized, clock: ClockDep, community_id: CommunityId) -> DutyPublic:
    """Who is on duty now in each team, and each team's next gap (nobody on duty)."""
    return _duty(rosters.duty_board(conn, community_id, clock()))
