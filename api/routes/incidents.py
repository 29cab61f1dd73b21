"""``/api/v1/incidents``, ``/alerts/{id}/dispatch``, ``/me/dispatches``: from an alert to
people on site, and back (docs/incidents.md).

The pipeline's incident desk groups alerts into incidents, dispatches automatically
and escalates; these routes let the control room do the same by hand and let a
responder answer what was sent to them. Pushing a dispatch to the responder (MQTT,
webhook) is the desk's outbox: a route only writes the dispatch and its deliveries.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ClockDep, ConnDep
from api.scope import (
    AlertId,
    Authorized,
    CommunityId,
    IncidentId,
    OwnDispatchId,
    community_clause,
    not_found,
    unknown_in_body,
)
from core.incidents import MAX_TARGET_S, IncidentType, Targets, classify, target_problems
from store.incidents import (
    DispatchError,
    acknowledge,
    all_targets,
    dispatch,
    dispatch_team,
    get_incident,
    resolve,
    respond,
    set_targets,
    sync_alerts,
    targets_for,
)

__all__ = ["alerts_router", "incident_detail", "me_router", "router", "targets_router"]

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

_COLUMNS = (
    "id, community_id, building, incident_type, title, stage, opened_at, acknowledged_at,"
    " dispatched_at, accepted_at, arrived_at, resolved_at, escalations"
)
_FIELDS = tuple(c.strip() for c in _COLUMNS.split(","))


def _deadlines(conn: Conn, base: dict[str, Any]) -> list[DeadlinePublic]:
    targets = targets_for(conn, base["community_id"], base["incident_type"])
    opened: datetime = base["opened_at"]
    out = []
    for name, seconds, met in (
        ("ack", targets.ack_s, base["acknowledged_at"] or base["dispatched_at"]),
        ("dispatch", targets.dispatch_s, base["dispatched_at"]),
        ("arrival", targets.arrival_s, base["arrived_at"]),
        ("resolve", targets.resolve_s, base["resolved_at"]),
    ):
        due = opened + timedelta(seconds=seconds)
        out.append(DeadlinePublic(target=name, seconds=seconds, due_at=due, met_at=met))
    return out


def incident_detail(conn: Conn, row: tuple[Any, ...]) -> IncidentPublic:
    base = dict(zip(_FIELDS, row, strict=True))
    incident_id = base["id"]
    alert_ids = [
        int(a)
        for (a,) in conn.execute(
            "SELECT alert_id FROM incident_alerts WHERE incident_id = %s ORDER BY alert_id",
            (incident_id,),
        )
    ]
    dispatches = [
        DispatchPublic(
            id=r[0],
            incident_id=incident_id,
            responder_id=r[1],
            responder_name=r[2],
            team_id=r[3],
            level=r[4],
            state=r[5],
            dispatched_at=r[6],
            dispatched_by=r[7],
            delivered_at=r[8],
            received_at=r[9],
            accepted_at=r[10],
            arrived_at=r[11],
        )
        for r in conn.execute(
            "SELECT x.id, x.responder_id, r.name, x.team_id, x.level, x.state, x.dispatched_at,"
            " x.dispatched_by, x.delivered_at, x.received_at, x.accepted_at, x.arrived_at"
            " FROM dispatches AS x JOIN responders AS r ON r.id = x.responder_id"
            " WHERE x.incident_id = %s ORDER BY x.id",
            (incident_id,),
        )
    ]
    timeline = [
        StepPublic(step=s, at=a, actor=w, responder_id=r, dispatch_id=d, detail=detail)
        for s, a, w, r, d, detail in conn.execute(
            "SELECT step, at, actor, responder_id, dispatch_id, detail FROM incident_steps"
            " WHERE incident_id = %s ORDER BY at, id",
            (incident_id,),
        )
    ]
    deadlines = _deadlines(conn, base)
    pending = [d for d in deadlines if d.met_at is None]
    return IncidentPublic(
        **base,
        alert_ids=alert_ids,
        next_deadline=None if base["resolved_at"] is not None or not pending else pending[0],
        deadlines=deadlines,
        dispatches=dispatches,
        timeline=timeline,
    )


def _load(conn: Conn, incident_id: int) -> IncidentPublic:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE id = %s".encode(),  # noqa: S608 - constant columns
        (incident_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"no incident {incident_id}")
    return incident_detail(conn, row)


def _conflict(exc: DispatchError) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))


def _check_people(conn: Conn, community: str, team: str | None, people: list[str]) -> None:
    """Named teams and responders must be the incident's community's (else: unknown)."""
    if team is not None:
        row = conn.execute("SELECT community_id FROM teams WHERE id = %s", (team,)).fetchone()
        if row is None or row[0] != community:
            raise unknown_in_body("team_id", team)
    for person in people:
        row = conn.execute("SELECT community_id FROM responders WHERE id = %s", (person,))
        found = row.fetchone()
        if found is None or found[0] != community:
            raise unknown_in_body("responder_id", person)


def _send(
    conn: Conn, incident_id: int, body: DispatchIn, actor: str, now: datetime
) -> IncidentPublic:
    found = get_incident(conn, incident_id)
    if found is None:
        raise not_found(f"no incident {incident_id}")
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
    scope, params = community_clause(principal)
    where = [scope]
    if community_id is not None:
        where.append("community_id = %s")
        params.append(community_id)
    if open_only:
        where.append("resolved_at IS NULL")
    query = (
        f"SELECT {_COLUMNS} FROM incidents WHERE {' AND '.join(where)}"  # noqa: S608 - constant clauses
        " ORDER BY opened_at DESC, id DESC LIMIT %s"
    )
    rows = conn.execute(query.encode(), [*params, limit]).fetchall()
    return IncidentsPublic(data=[incident_detail(conn, r) for r in rows])


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
    found = get_incident(conn, incident_id)
    if found is None:
        raise not_found(f"no incident {incident_id}")
    _check_people(conn, found.community_id, None, [body.from_responder_id, body.to_responder_id])
    now = clock()
    with conn.transaction():
        row = conn.execute(
            "UPDATE dispatches SET state = 'cancelled', closed_at = %s WHERE incident_id = %s"
            " AND responder_id = %s AND state IN ('sent', 'accepted') RETURNING id",
            (now, incident_id, body.from_responder_id),
        ).fetchone()
        if row is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, detail=f"{body.from_responder_id!r} is not on the way"
            )
        conn.execute(
            "INSERT INTO incident_steps (incident_id, community_id, step, at, actor,"
            " responder_id, dispatch_id) VALUES (%s, %s, 'reassigned', %s, %s, %s, %s)",
            (incident_id, found.community_id, now, principal.actor, body.from_responder_id, row[0]),
        )
        try:
            dispatch(
                conn,
                incident_id,
                [body.to_responder_id],
                by=principal.actor,
                at=now,
                reason="reassigned",
            )
        except DispatchError as exc:
            raise _conflict(exc) from exc
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
    row = conn.execute(
        "SELECT id FROM dispatches WHERE incident_id = %s AND responder_id = %s"
        " AND state IN ('sent', 'accepted') ORDER BY id DESC LIMIT 1",
        (incident_id, body.responder_id),
    ).fetchone()
    if row is None:
        raise unknown_in_body("responder_id", body.responder_id)
    respond(conn, int(row[0]), "arrive", clock(), principal.actor, "operator")
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
    row = conn.execute(
        "SELECT incident_id FROM incident_alerts WHERE alert_id = %s", (alert_id,)
    ).fetchone()
    if row is None:
        alert = conn.execute(
            "SELECT a.community_id, a.building, a.rule_id, a.title, a.raised_at, d.device_class,"
            " d.resident_id FROM alerts AS a LEFT JOIN devices AS d ON d.id = a.device_id"
            " WHERE a.id = %s",
            (alert_id,),
        ).fetchone()
        if alert is None:
            raise not_found(f"no alert {alert_id}")
        community, building, rule_id, title, raised, cls, resident = alert
        kind: IncidentType = classify(rule_id, cls)
        with conn.transaction():
            made = conn.execute(
                "INSERT INTO incidents (community_id, building, resident_id, incident_type,"
                " title, opened_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (community, building, resident, kind.value, title, raised),
            ).fetchone()
            assert made is not None
            conn.execute(
                "INSERT INTO incident_alerts (alert_id, incident_id, community_id)"
                " VALUES (%s, %s, %s)",
                (alert_id, made[0], community),
            )
            conn.execute(
                "INSERT INTO incident_steps (incident_id, community_id, step, at, actor, detail)"
                " VALUES (%s, %s, 'raised', %s, %s, %s::jsonb)",
                (made[0], community, raised, f"alert:{alert_id}", f'{{"alert_id": {alert_id}}}'),
            )
        row = made
    return _send(conn, int(row[0]), body, principal.actor, now)


# --- the responder's side ------------------------------------------------------------------


@me_router.get("/dispatches")
def my_dispatches(conn: ConnDep, principal: Authorized) -> MyDispatchesPublic:
    """What was sent to the caller (a user linked to a responder), newest first."""
    rows = conn.execute(
        "SELECT x.id, i.id, i.community_id, i.building, i.incident_type, i.title, i.stage,"
        " x.state, x.dispatched_at, x.accepted_at, x.arrived_at FROM dispatches AS x"
        " JOIN responders AS r ON r.id = x.responder_id JOIN incidents AS i ON i.id = x.incident_id"
        " WHERE r.user_id = %s ORDER BY x.id DESC LIMIT 100",
        (principal.user_id,),
    ).fetchall()
    keys = list(MyDispatchPublic.model_fields)
    return MyDispatchesPublic(
        data=[MyDispatchPublic(**dict(zip(keys, r, strict=True))) for r in rows]
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
    row = conn.execute("SELECT state FROM dispatches WHERE id = %s", (dispatch_id,)).fetchone()
    if row is None:
        raise not_found(f"no dispatch {dispatch_id}")
    return ReplyPublic(dispatch_id=dispatch_id, state=row[0])


@me_router.post("/dispatches/{dispatch_id}/received")
def reply_received(
    conn: ConnDep, principal: Authorized, clock: ClockDep, dispatch_id: OwnDispatchId
) -> ReplyPublic:
    """The dispatch reached the responder's phone or app."""
    _reply(conn, principal, dispatch_id, "received", clock())
    return _answer(conn, dispatch_id)


@me_router.post("/dispatches/{dispatch_id}/accept")
def reply_accept(
    conn: ConnDep, principal: Authorized, clock: ClockDep, dispatch_id: OwnDispatchId
) -> ReplyPublic:
    _reply(conn, principal, dispatch_id, "accept", clock())
    return _answer(conn, dispatch_id)


@me_router.post("/dispatches/{dispatch_id}/decline")
def reply_decline(
    conn: ConnDep, principal: Authorized, clock: ClockDep, dispatch_id: OwnDispatchId
) -> ReplyPublic:
    """Cannot go: the next on the ladder is called at once."""
    _reply(conn, principal, dispatch_id, "decline", clock())
    return _answer(conn, dispatch_id)


@me_router.post("/dispatches/{dispatch_id}/arrive")
def reply_arrive(
    conn: ConnDep, principal: Authorized, clock: ClockDep, dispatch_id: OwnDispatchId
) -> ReplyPublic:
    """On scene."""
    _reply(conn, principal, dispatch_id, "arrive", clock())
    return _answer(conn, dispatch_id)


# --- targets ------------------------------------------------------------------------------


def _targets_public(conn: Conn, community_id: str) -> TargetsPublic:
    return TargetsPublic(
        community_id=community_id,
        data=[
            TargetPublic(
                incident_type=kind.value,
                ack_s=t.ack_s,
                dispatch_s=t.dispatch_s,
                accept_s=t.accept_s,
                arrival_s=t.arrival_s,
                resolve_s=t.resolve_s,
                custom=custom,
            )
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
