"""``/api/v1/incidents``, ``/alerts/{id}/dispatch``, ``/me/dispatches``: from an alert to
people on site, and back (docs/incidents.md).

The pipeline's incident desk groups alerts into incidents, dispatches automatically
and escalates; these routes let the control room do the same by hand and let a
responder answer what was sent to them. Pushing a dispatch to the responder (MQTT,
webhook) is the desk's outbox: a route only writes the dispatch and its deliveries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.answers import found_or_404
from api.deps import ClockDep, ConnDep
from api.scope import (
    AlertId,
    Authorized,
    CommunityId,
    IncidentId,
    OwnDispatchId,
    not_found,
    unknown_in_body,
)
from core.incidents import MAX_TARGET_S, IncidentType, Targets, target_problems
from core.incidents import deadlines as deadlines_of
from store.dispatch import DispatchError, dispatch_state, dispatches_of_user, open_dispatch_of
from store.incident_records import (
    IncidentView,
    all_targets,
    get_incident,
    incident_view,
    incident_views,
    set_targets,
)
from store.incidents import (
    acknowledge,
    community_of,
    dispatch,
    dispatch_team,
    open_for_alert,
    resolve,
    respond,
    sync_alerts,
)
from store.incidents import reassign as reassign_responder

__all__ = ["alerts_router", "incident_public", "me_router", "router", "targets_router"]

Conn = psycopg.Connection[Any]
router = APIRouter(prefix="/incidents", tags=["incidents"])
alerts_router = APIRouter(prefix="/alerts", tags=["incidents"])
me_router = APIRouter(prefix="/me", tags=["incidents"])
targets_router = APIRouter(prefix="/communities", tags=["incidents"])
_IN = ConfigDict(frozen=True, extra="forbid")
_OUT = ConfigDict(frozen=True)
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class DispatchIn(BaseModel):
    """A team (whoever is on duty) or named responders, or both."""

    model_config = _IN

    team_id: str | None = Field(default=None, pattern=_ID)
    responder_ids: list[str] = Field(default_factory=list, max_length=20)


class ReassignIn(BaseModel):
    model_config = _IN

    from_responder_id: str = Field(pattern=_ID)
    to_responder_id: str = Field(pattern=_ID)


class ArrivalIn(BaseModel):
    model_config = _IN

    responder_id: str = Field(pattern=_ID)


class NoteIn(BaseModel):
    model_config = _IN

    note: str = Field(default="", max_length=2000)


_SECONDS = Field(ge=1, le=MAX_TARGET_S)


class TargetsIn(BaseModel):
    """One incident type's targets, in seconds from the incident's opening (``accept_s``:
    from one dispatch). Left out, ``accept_s`` keeps its value in force."""

    model_config = _IN

    incident_type: IncidentType
    ack_s: int = _SECONDS
    dispatch_s: int = _SECONDS
    accept_s: int | None = Field(default=None, ge=1, le=MAX_TARGET_S)
    arrival_s: int = _SECONDS
    resolve_s: int = _SECONDS


class TargetPublic(BaseModel):
    model_config = _OUT

    incident_type: str
    ack_s: int
    dispatch_s: int
    accept_s: int
    arrival_s: int
    resolve_s: int
    # False: nothing set for the community, the platform's default is in force.
    custom: bool


class TargetsPublic(BaseModel):
    model_config = _OUT

    community_id: str
    data: list[TargetPublic]


class StepPublic(BaseModel):
    model_config = _OUT

    step: str
    at: datetime
    actor: str
    responder_id: str | None
    dispatch_id: int | None
    detail: dict[str, Any]


class DispatchPublic(BaseModel):
    model_config = _OUT

    id: int
    incident_id: int
    responder_id: str
    responder_name: str
    team_id: str | None
    level: int
    state: str
    dispatched_at: datetime
    dispatched_by: str
    delivered_at: datetime | None
    received_at: datetime | None
    accepted_at: datetime | None
    arrived_at: datetime | None


class DeadlinePublic(BaseModel):
    model_config = _OUT

    target: str
    seconds: int
    due_at: datetime
    met_at: datetime | None


class IncidentPublic(BaseModel):
    model_config = _OUT

    id: int
    community_id: str
    building: str | None
    incident_type: str
    title: str
    stage: str
    opened_at: datetime
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    accepted_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    escalations: int
    alert_ids: list[int]
    # The next target not yet met (the board's countdown), and every target.
    next_deadline: DeadlinePublic | None
    deadlines: list[DeadlinePublic]
    dispatches: list[DispatchPublic]
    timeline: list[StepPublic]


class IncidentsPublic(BaseModel):
    model_config = _OUT

    data: list[IncidentPublic]


class MyDispatchPublic(BaseModel):
    """What a responder sees: where to go and what for, not the control room's notes."""

    model_config = _OUT

    dispatch_id: int
    incident_id: int
    community_id: str
    building: str | None
    incident_type: str
    title: str
    stage: str
    state: str
    dispatched_at: datetime
    accepted_at: datetime | None
    arrived_at: datetime | None


class MyDispatchesPublic(BaseModel):
    model_config = _OUT

    data: list[MyDispatchPublic]


# --- reading -------------------------------------------------------------------------------


def incident_public(view: IncidentView) -> IncidentPublic:
    deadlines = [
        DeadlinePublic.model_validate(d, from_attributes=True)
        for d in deadlines_of(view.targets, view.progress)
    ]
    pending = [d for d in deadlines if d.met_at is None]
    base = {k: getattr(view, k) for k in _BASE_FIELDS}
    return IncidentPublic(
        **base,
        next_deadline=None if view.resolved_at is not None or not pending else pending[0],
        deadlines=deadlines,
        dispatches=[
            DispatchPublic.model_validate(d, from_attributes=True) for d in view.dispatches
        ],
        timeline=[StepPublic.model_validate(t, from_attributes=True) for t in view.timeline],
    )


_BASE_FIELDS = (
    *("id", "community_id", "building", "incident_type", "title", "stage", "opened_at"),
    *("acknowledged_at", "dispatched_at", "accepted_at", "arrived_at", "resolved_at"),
    *("escalations", "alert_ids"),
)


def _load(conn: Conn, incident_id: int) -> IncidentPublic:
    return incident_public(
        found_or_404(incident_view(conn, incident_id), f"no incident {incident_id}")
    )


def _conflict(exc: DispatchError) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))


def _check_people(conn: Conn, community: str, team: str | None, people: list[str]) -> None:
    """Named teams and responders must be the incident's community's (else: unknown)."""
    if team is not None and community_of(conn, "team", team) != community:
        raise unknown_in_body("team_id", team)
    for person in people:
        if community_of(conn, "responder", person) != community:
            raise unknown_in_body("responder_id", person)


def _send(
    conn: Conn, incident_id: int, body: DispatchIn, actor: str, now: datetime
) -> IncidentPublic:
    found = found_or_404(get_incident(conn, incident_id), f"no incident {incident_id}")
    if body.team_id is None and not body.responder_ids:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": ["body"], "msg": "name a team or responders", "type": "value_error"}],
        )
    _check_people(conn, found.community_id, body.team_id, body.responder_ids)
    try:
        if body.team_id is not None:
            dispatch_team(conn, incident_id, body.team_id, by=actor, at=now, reason="operator")
        if body.responder_ids:
            dispatch(
                conn,
                incident_id,
                body.responder_ids,
                by=actor,
                at=now,
                team_id=body.team_id,
                reason="operator",
            )
    except DispatchError as exc:
        raise _conflict(exc) from exc
    return _load(conn, incident_id)


# --- routes --------------------------------------------------------------------------------


@router.get("")
def list_incidents(
    conn: ConnDep,
    principal: Authorized,
    clock: ClockDep,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> IncidentsPublic:
    """Incidents of the caller's communities, newest first; ``open=true``: unresolved."""
    sync_alerts(conn, clock())
    views = incident_views(
        conn, principal.communities, community_id=community_id, open_only=open_only, limit=limit
    )
    return IncidentsPublic(data=[incident_public(v) for v in views])


@router.get("/{incident_id}")
def get_incident_route(conn: ConnDep, _p: Authorized, incident_id: IncidentId) -> IncidentPublic:
    """The incident, its alerts, dispatches, deadlines and timeline."""
    return _load(conn, incident_id)


@router.post("/{incident_id}/dispatch")
def dispatch_incident(
    conn: ConnDep,
    principal: Authorized,
    clock: ClockDep,
    incident_id: IncidentId,
    body: DispatchIn,
) -> IncidentPublic:
    """Send a team (whoever is on duty; nobody: up the ladder) or named responders."""
    return _send(conn, incident_id, body, principal.actor, clock())


@router.post("/{incident_id}/reassign")
def reassign(
    conn: ConnDep,
    principal: Authorized,
    clock: ClockDep,
    incident_id: IncidentId,
    body: ReassignIn,
) -> IncidentPublic:
    """Call one responder off and send another in their place."""
    found = found_or_404(get_incident(conn, incident_id), f"no incident {incident_id}")
    _check_people(conn, found.community_id, None, [body.from_responder_id, body.to_responder_id])
    try:
        moved = reassign_responder(
            conn,
            incident_id,
            found.community_id,
            body.from_responder_id,
            body.to_responder_id,
            by=principal.actor,
            at=clock(),
        )
    except DispatchError as exc:
        raise _conflict(exc) from exc
    if not moved:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"{body.from_responder_id!r} is not on the way"
        )
    return _load(conn, incident_id)


@router.post("/{incident_id}/arrival")
def record_arrival(
    conn: ConnDep,
    principal: Authorized,
    clock: ClockDep,
    incident_id: IncidentId,
    body: ArrivalIn,
) -> IncidentPublic:
    """The control room records a responder on scene (they phoned in)."""
    dispatch_id = open_dispatch_of(conn, incident_id, body.responder_id)
    if dispatch_id is None:
        raise unknown_in_body("responder_id", body.responder_id)
    respond(conn, dispatch_id, "arrive", clock(), principal.actor, "operator")
    return _load(conn, incident_id)


@router.post("/{incident_id}/ack")
def ack_incident(
    conn: ConnDep, principal: Authorized, clock: ClockDep, incident_id: IncidentId
) -> IncidentPublic:
    acknowledge(conn, incident_id, principal.actor, clock())
    return _load(conn, incident_id)


@router.post("/{incident_id}/resolve")
def resolve_incident(
    conn: ConnDep, principal: Authorized, clock: ClockDep, incident_id: IncidentId, body: NoteIn
) -> IncidentPublic:
    resolve(conn, incident_id, principal.actor, clock(), body.note)
    return _load(conn, incident_id)


@alerts_router.post("/{alert_id}/dispatch")
def dispatch_alert(
    conn: ConnDep, principal: Authorized, clock: ClockDep, alert_id: AlertId, body: DispatchIn
) -> IncidentPublic:
    """Dispatch from an alert: its incident (made now if the desk has not yet)."""
    now = clock()
    sync_alerts(conn, now)
    incident = open_for_alert(conn, alert_id)
    if incident is None:
        raise not_found(f"no alert {alert_id}")
    return _send(conn, incident, body, principal.actor, now)


# --- the responder's side ------------------------------------------------------------------


@me_router.get("/dispatches")
def my_dispatches(conn: ConnDep, principal: Authorized) -> MyDispatchesPublic:
    """What was sent to the caller (a user linked to a responder), newest first."""
    found = dispatches_of_user(conn, principal.user_id)
    return MyDispatchesPublic(
        data=[MyDispatchPublic.model_validate(d, from_attributes=True) for d in found]
    )


def _reply(conn: Conn, principal: Authorized, dispatch_id: int, action: str, now: datetime) -> None:
    try:
        respond(conn, dispatch_id, action, now, principal.actor, "api")
    except DispatchError as exc:
        raise _conflict(exc) from exc


class ReplyPublic(BaseModel):
    model_config = _OUT

    dispatch_id: int
    state: str


def _answer(conn: Conn, dispatch_id: int) -> ReplyPublic:
    state = found_or_404(dispatch_state(conn, dispatch_id), f"no dispatch {dispatch_id}")
    return ReplyPublic(dispatch_id=dispatch_id, state=state)


# The responder's replies, one route each: action -> what the route's documentation says.
_REPLIES: dict[str, str | None] = {
    "received": "The dispatch reached the responder's phone or app.",
    "accept": None,
    "decline": "Cannot go: the next on the ladder is called at once.",
    "arrive": "On scene.",
}


def _reply_route(action: str, doc: str | None) -> Callable[..., ReplyPublic]:
    def reply(
        conn: ConnDep, principal: Authorized, clock: ClockDep, dispatch_id: OwnDispatchId
    ) -> ReplyPublic:
        _reply(conn, principal, dispatch_id, action, clock())
        return _answer(conn, dispatch_id)

    reply.__name__ = reply.__qualname__ = f"reply_{action}"
    reply.__doc__ = doc
    return reply


for _action, _doc in _REPLIES.items():
    me_router.post(f"/dispatches/{{dispatch_id}}/{_action}")(_reply_route(_action, _doc))


# --- targets ------------------------------------------------------------------------------


def _targets_public(conn: Conn, community_id: str) -> TargetsPublic:
    return TargetsPublic(
        community_id=community_id,
        data=[
            TargetPublic(incident_type=kind.value, **asdict(t), custom=custom)
            for kind, (t, custom) in all_targets(conn, community_id).items()
        ],
    )


@targets_router.get("/{community_id}/incident-targets")
def get_targets(conn: ConnDep, _p: Authorized, community_id: CommunityId) -> TargetsPublic:
    """The targets in force for each incident type: the community's, else the defaults."""
    return _targets_public(conn, community_id)


@targets_router.put("/{community_id}/incident-targets")
def put_targets(
    conn: ConnDep, _p: Authorized, community_id: CommunityId, body: TargetsIn
) -> TargetsPublic:
    """Set one incident type's targets (administrators). Open incidents escalate by the
    new targets from the desk's next pass."""
    current, _custom = all_targets(conn, community_id)[body.incident_type]
    targets = Targets(
        ack_s=body.ack_s,
        dispatch_s=body.dispatch_s,
        accept_s=current.accept_s if body.accept_s is None else body.accept_s,
        arrival_s=body.arrival_s,
        resolve_s=body.resolve_s,
    )
    problems = target_problems(targets)
    if problems:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": ["body"], "msg": p, "type": "value_error"} for p in problems],
        )
    set_targets(conn, community_id, body.incident_type.value, targets)
    return _targets_public(conn, community_id)
