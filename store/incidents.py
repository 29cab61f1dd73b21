"""Every statement on incidents and dispatches, shared by the API, the CLI and
the pipeline's incident desk (``alerts/incident_desk.py``).

Functions take a psycopg connection and the time (never the wall clock), so the same
code runs under an injected clock in tests. Writes that belong together run in one
``conn.transaction()`` (a savepoint inside a caller's transaction). The decisions
themselves (roster, targets, ladder) are the pure ``core.roster`` and
``core.incidents``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from core.incidents import (
    CONTROL_ROOM,
    DEFAULT_TARGETS,
    GROUP_WINDOW,
    IncidentRecord,
    IncidentType,
    Progress,
    Stage,
    Targets,
    auto_dispatches,
    classify,
    due_targets,
    next_on_ladder,
    stronger,
)
from store.places import set_dispatch_gateway
from store.rosters import on_duty_now, roster_order, team_of
from store.scoping import Communities, community_filter, given

__all__ = [
    "DispatchError",
    "DispatchView",
    "IncidentView",
    "MyDispatch",
    "StepView",
    "acknowledge",
    "all_targets",
    "auto_dispatch",
    "community_of",
    "dispatch",
    "dispatch_state",
    "dispatch_team",
    "dispatches_of_user",
    "escalate_due",
    "incident_of_alert",
    "incident_records",
    "incident_view",
    "incident_views",
    "infer_arrivals",
    "open_dispatch_of",
    "open_for_alert",
    "reassign",
    "resolve",
    "respond",
    "set_dispatch_gateway",
    "set_targets",
    "sync_alerts",
    "targets_for",
]

Conn = psycopg.Connection[Any]
SYSTEM = "system:incident-desk"
# Alerts at these severities open an incident; lower ones join an open one only.
OPENING_SEVERITIES = ("major", "critical")
# Which team an automatic dispatch calls, by incident type.
AUTO_TEAM = {IncidentType.FIRE: "micro_fire_station", IncidentType.INTRUSION: "security"}
OPEN_DISPATCH = ("sent", "accepted")


class DispatchError(ValueError):
    """A dispatch or a reply that cannot be done as asked (closed incident, wrong state)."""


# --- targets ------------------------------------------------------------------------------


def targets_for(conn: Conn, community_id: str, incident_type: str) -> Targets:
    row = conn.execute(
        "SELECT ack_s, dispatch_s, accept_s, arrival_s, resolve_s FROM incident_targets"
        " WHERE community_id = %s AND incident_type = %s",
        (community_id, incident_type),
    ).fetchone()
    if row is None:
        return DEFAULT_TARGETS[IncidentType(incident_type)]
    return Targets(*(int(v) for v in row))


def all_targets(conn: Conn, community_id: str) -> dict[IncidentType, tuple[Targets, bool]]:
    """Every incident type's targets in force, and whether the community set them."""
    rows = {
        str(r[0]): Targets(*(int(v) for v in r[1:]))
        for r in conn.execute(
            "SELECT incident_type, ack_s, dispatch_s, accept_s, arrival_s, resolve_s"
            " FROM incident_targets WHERE community_id = %s",
            (community_id,),
        )
    }
    return {
        kind: (rows[kind.value], True) if kind.value in rows else (DEFAULT_TARGETS[kind], False)
        for kind in IncidentType
    }


def set_targets(conn: Conn, community_id: str, incident_type: str, targets: Targets) -> None:
    """Replace one type's targets; open incidents are measured against them at once."""
    conn.execute(
        "INSERT INTO incident_targets (community_id, incident_type, ack_s, dispatch_s, accept_s,"
        " arrival_s, resolve_s) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (community_id, incident_type) DO UPDATE SET ack_s = excluded.ack_s,"
        " dispatch_s = excluded.dispatch_s, accept_s = excluded.accept_s,"
        " arrival_s = excluded.arrival_s, resolve_s = excluded.resolve_s",
        (
            community_id,
            incident_type,
            targets.ack_s,
            targets.dispatch_s,
            targets.accept_s,
            targets.arrival_s,
            targets.resolve_s,
        ),
    )


# --- the timeline -------------------------------------------------------------------------


def step(
    conn: Conn,
    incident_id: int,
    community_id: str,
    name: str,
    at: datetime,
    actor: str,
    *,
    responder_id: str | None = None,
    dispatch_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "INSERT INTO incident_steps (incident_id, community_id, step, at, actor, responder_id,"
        " dispatch_id, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            incident_id,
            community_id,
            name,
            at,
            actor,
            responder_id,
            dispatch_id,
            Jsonb(detail or {}),
        ),
    )


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    community_id: str
    building: str | None
    resident_id: str | None
    incident_type: str
    stage: str
    opened_at: datetime
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    accepted_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    escalated: list[str]


_INCIDENT = (
    "SELECT id, community_id, building, resident_id, incident_type, stage, opened_at,"
    " acknowledged_at, dispatched_at, accepted_at, arrived_at, resolved_at, escalated"
    " FROM incidents"
)


def get_incident(conn: Conn, incident_id: int, *, lock: bool = False) -> Incident | None:
    query = _INCIDENT + " WHERE id = %s" + (" FOR UPDATE" if lock else "")
    row = conn.execute(query.encode(), (incident_id,)).fetchone()
    return None if row is None else Incident(*row)


def _advance(conn: Conn, incident_id: int, stage: Stage, column: str, at: datetime) -> None:
    """Set a stage's time once, and the stage if it moves forward."""
    order = [s.value for s in Stage]
    conn.execute(
        f"UPDATE incidents SET {column} = coalesce({column}, %s),"  # noqa: S608 - column is a constant of this module
        " stage = CASE WHEN array_position(%s::text[], stage) < array_position(%s::text[], %s)"
        " THEN %s ELSE stage END WHERE id = %s",
        (at, order, order, stage.value, stage.value, incident_id),
    )


# --- alerts become incidents --------------------------------------------------------------


def sync_alerts(conn: Conn, now: datetime) -> list[int]:
    """Group new alerts into incidents, carry operator acknowledgements over, and
    dispatch automatically where the rules say so. Returns the incidents touched."""
    touched: list[int] = []
    with conn.transaction():
        fresh = conn.execute(
            "SELECT a.id, a.community_id, a.building, a.rule_id, a.severity, a.title,"
            " a.raised_at, d.device_class, d.resident_id FROM alerts AS a"
            " LEFT JOIN devices AS d ON d.id = a.device_id"
            " WHERE a.state IN ('open', 'acknowledged') AND a.group_id IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM incident_alerts AS i WHERE i.alert_id = a.id)"
            " ORDER BY a.raised_at, a.id FOR UPDATE OF a SKIP LOCKED"
        ).fetchall()
        for alert_id, community, building, rule_id, severity, title, raised, cls, resident in fresh:
            kind = classify(rule_id, cls)
            incident = _open_incident_for(conn, community, building, resident, raised)
            if incident is None:
                if severity not in OPENING_SEVERITIES:
                    continue
                incident = _open_incident(
                    conn, alert_id, community, building, resident, kind, rule_id, title, raised
                )
            else:
                conn.execute(
                    "UPDATE incidents SET incident_type = %s, resident_id ="
                    " coalesce(resident_id, %s) WHERE id = %s",
                    (_stronger_type(conn, incident, kind).value, resident, incident),
                )
                step(
                    conn,
                    incident,
                    community,
                    "attached",
                    raised,
                    f"alert:{alert_id}",
                    detail={"alert_id": alert_id, "rule_id": rule_id, "title": title},
                )
            _link(conn, alert_id, incident, community)
            touched.append(incident)
        touched += _carry_acknowledgements(conn)
        for incident_id, rule_id, severity in conn.execute(
            "SELECT i.id, a.rule_id, a.severity FROM incidents AS i"
            " JOIN incident_alerts AS l ON l.incident_id = i.id"
            " JOIN alerts AS a ON a.id = l.alert_id"
            " WHERE i.resolved_at IS NULL AND NOT i.auto_dispatched ORDER BY i.id"
        ).fetchall():
            if not auto_dispatches(rule_id, severity):
                continue
            # Claimed once: the desk and an API request may sync at the same moment.
            claimed = conn.execute(
                "UPDATE incidents SET auto_dispatched = true"
                " WHERE id = %s AND NOT auto_dispatched RETURNING id",
                (incident_id,),
            ).fetchone()
            if claimed is not None:
                auto_dispatch(conn, int(incident_id), now)
                touched.append(int(incident_id))
    return sorted(set(touched))


def _open_incident(
    conn: Conn,
    alert_id: int,
    community: str,
    building: str | None,
    resident: str | None,
    kind: IncidentType,
    rule_id: str,
    title: str,
    raised: datetime,
) -> int:
    """A new incident opened by an alert (not linked yet: ``_link``)."""
    row = conn.execute(
        "INSERT INTO incidents (community_id, building, resident_id, incident_type,"
        " title, opened_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (community, building, resident, kind.value, title, raised),
    ).fetchone()
    assert row is not None
    incident = int(row[0])
    step(
        conn,
        incident,
        community,
        "raised",
        raised,
        f"alert:{alert_id}",
        detail={"alert_id": alert_id, "rule_id": rule_id, "title": title},
    )
    return incident


def _link(conn: Conn, alert_id: int, incident_id: int, community: str) -> None:
    conn.execute(
        "INSERT INTO incident_alerts (alert_id, incident_id, community_id) VALUES (%s, %s, %s)",
        (alert_id, incident_id, community),
    )


def incident_of_alert(conn: Conn, alert_id: int) -> int | None:
    """The incident an alert belongs to, if it has been grouped into one."""
    row = conn.execute(
        "SELECT incident_id FROM incident_alerts WHERE alert_id = %s", (alert_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def open_for_alert(conn: Conn, alert_id: int) -> int | None:
    """The alert's incident, opened now if the desk has not (an operator dispatches
    from an alert below the opening severities). None if there is no such alert."""
    found = incident_of_alert(conn, alert_id)
    if found is not None:
        return found
    alert = conn.execute(
        "SELECT a.community_id, a.building, a.rule_id, a.title, a.raised_at, d.device_class,"
        " d.resident_id FROM alerts AS a LEFT JOIN devices AS d ON d.id = a.device_id"
        " WHERE a.id = %s",
        (alert_id,),
    ).fetchone()
    if alert is None:
        return None
    community, building, rule_id, title, raised, cls, resident = alert
    kind = classify(rule_id, cls)
    with conn.transaction():
        incident = _open_incident(
            conn, alert_id, community, building, resident, kind, rule_id, title, raised
        )
        _link(conn, alert_id, incident, community)
    return incident


def _stronger_type(conn: Conn, incident_id: int, kind: IncidentType) -> IncidentType:
    row = conn.execute(
        "SELECT incident_type FROM incidents WHERE id = %s", (incident_id,)
    ).fetchone()
    return kind if row is None else stronger(IncidentType(row[0]), kind)


def _open_incident_for(
    conn: Conn, community: str, building: str | None, resident: str | None, raised: datetime
) -> int | None:
    """The open incident this alert belongs to: same building (or, without one, the same
    resident), opened within GROUP_WINDOW before it."""
    if building is None and resident is None:
        return None
    row = conn.execute(
        "SELECT id FROM incidents WHERE community_id = %s AND resolved_at IS NULL"
        " AND opened_at >= %s AND ((%s::text IS NOT NULL AND building = %s)"
        "   OR (%s::text IS NULL AND resident_id = %s))"
        " ORDER BY opened_at DESC LIMIT 1",
        (community, raised - GROUP_WINDOW, building, building, building, resident),
    ).fetchone()
    return None if row is None else int(row[0])


def _carry_acknowledgements(conn: Conn) -> list[int]:
    """An operator who acknowledged one of an incident's alerts acknowledged the incident."""
    rows = conn.execute(
        "SELECT DISTINCT ON (i.id) i.id, i.community_id, a.acknowledged_at,"
        " coalesce(a.acknowledged_by, 'unknown') FROM incidents AS i"
        " JOIN incident_alerts AS l ON l.incident_id = i.id JOIN alerts AS a ON a.id = l.alert_id"
        " WHERE i.acknowledged_at IS NULL AND a.acknowledged_at IS NOT NULL"
        " ORDER BY i.id, a.acknowledged_at"
    ).fetchall()
    for incident_id, community, at, by in rows:
        acknowledge(conn, int(incident_id), str(by), at, community=community)
    return [int(r[0]) for r in rows]


# --- operator actions ---------------------------------------------------------------------


def acknowledge(
    conn: Conn, incident_id: int, by: str, at: datetime, *, community: str | None = None
) -> None:
    with conn.transaction():
        found = get_incident(conn, incident_id, lock=True)
        if found is None or found.acknowledged_at is not None:
            return
        _advance(conn, incident_id, Stage.ACKNOWLEDGED, "acknowledged_at", at)
        step(conn, incident_id, community or found.community_id, "acknowledged", at, by)


def resolve(conn: Conn, incident_id: int, by: str, at: datetime, note: str = "") -> bool:
    with conn.transaction():
        found = get_incident(conn, incident_id, lock=True)
        if found is None or found.resolved_at is not None:
            return False
        conn.execute(
            "UPDATE dispatches SET state = 'cancelled', closed_at = %s"
            " WHERE incident_id = %s AND state = 'sent'",
            (at, incident_id),
        )
        conn.execute(
            "UPDATE dispatches SET closed_at = coalesce(closed_at, %s) WHERE incident_id = %s",
            (at, incident_id),
        )
        _advance(conn, incident_id, Stage.RESOLVED, "resolved_at", at)
        step(conn, incident_id, found.community_id, "resolved", at, by, detail={"note": note})
    return True


def dispatch(
    conn: Conn,
    incident_id: int,
    responders: Sequence[str],
    *,
    by: str,
    at: datetime,
    team_id: str | None = None,
    level: int = 0,
    reason: str = "",
) -> list[int]:
    """Send responders (skipping any already on their way); returns the new dispatch ids.
    Each gets an MQTT push, and a webhook push when the community has a gateway."""
    made: list[int] = []
    with conn.transaction():
        found = get_incident(conn, incident_id, lock=True)
        if found is None:
            raise DispatchError(f"no incident {incident_id}")
        if found.resolved_at is not None:
            raise DispatchError(f"incident {incident_id} is resolved")
        gateway = conn.execute(
            "SELECT dispatch_webhook_url IS NOT NULL FROM communities WHERE id = %s",
            (found.community_id,),
        ).fetchone()
        for responder in dict.fromkeys(responders):
            busy = conn.execute(
                "SELECT 1 FROM dispatches WHERE incident_id = %s AND responder_id = %s"
                " AND state = ANY(%s)",
                (incident_id, responder, list(OPEN_DISPATCH)),
            ).fetchone()
            if busy is not None:
                continue
            row = conn.execute(
                "INSERT INTO dispatches (incident_id, community_id, responder_id, team_id, level,"
                " dispatched_at, dispatched_by)"
                " SELECT %s, %s, r.id, %s, %s, %s, %s FROM responders AS r"
                " WHERE r.id = %s AND r.community_id = %s RETURNING id",
                (
                    incident_id,
                    found.community_id,
                    team_id,
                    level,
                    at,
                    by,
                    responder,
                    found.community_id,
                ),
            ).fetchone()
            if row is None:
                raise DispatchError(f"no responder {responder!r} in {found.community_id}")
            dispatch_id = int(row[0])
            channels = ["mqtt"] + (["webhook"] if gateway and gateway[0] else [])
            for channel in channels:
                conn.execute(
                    "INSERT INTO dispatch_deliveries (dispatch_id, community_id, channel)"
                    " VALUES (%s, %s, %s)",
                    (dispatch_id, found.community_id, channel),
                )
            step(
                conn,
                incident_id,
                found.community_id,
                "dispatched",
                at,
                by,
                responder_id=responder,
                dispatch_id=dispatch_id,
                detail={"team_id": team_id, "level": level, "reason": reason},
            )
            made.append(dispatch_id)
        if made:
            _advance(conn, incident_id, Stage.DISPATCHED, "dispatched_at", at)
    return made


def dispatch_team(
    conn: Conn, incident_id: int, team_id: str, *, by: str, at: datetime, reason: str = ""
) -> list[int]:
    """Send whoever of the team is on duty; nobody on duty goes up the ladder at once."""
    people = on_duty_now(conn, team_id, at)
    if people:
        return dispatch(conn, incident_id, people, by=by, at=at, team_id=team_id, reason=reason)
    found = get_incident(conn, incident_id)
    if found is not None:
        step(
            conn,
            incident_id,
            found.community_id,
            "nobody_on_duty",
            at,
            by,
            detail={"team_id": team_id},
        )
    return _escalate(conn, incident_id, at, reason="nobody on duty", team_id=team_id)


def auto_dispatch(conn: Conn, incident_id: int, at: datetime) -> list[int]:
    """A confirmed fire: the building's micro fire station team. An SOS: the resident's
    care worker and the guard on duty."""
    found = get_incident(conn, incident_id)
    if found is None:
        return []
    kind = IncidentType(found.incident_type)
    made: list[int] = []
    if kind is IncidentType.SOS:
        row = conn.execute(
            "SELECT care_worker_id FROM residents WHERE id = %s", (found.resident_id,)
        ).fetchone()
        if row is not None and row[0] is not None:
            made += dispatch(
                conn,
                incident_id,
                [str(row[0])],
                by=SYSTEM,
                at=at,
                reason="the resident's care worker",
            )
        guards = team_of(conn, found.community_id, found.building, "security")
        if guards is not None:
            made += dispatch_team(
                conn, incident_id, guards, by=SYSTEM, at=at, reason="guard on duty"
            )
        if not made:  # nobody to send: the control room must know at once
            return _escalate(conn, incident_id, at, reason="no care worker or guard")
        return made
    kind_team = AUTO_TEAM.get(kind)
    team = (
        None if kind_team is None else team_of(conn, found.community_id, found.building, kind_team)
    )
    if team is None:
        return _escalate(conn, incident_id, at, reason="no team for this incident")
    return dispatch_team(conn, incident_id, team, by=SYSTEM, at=at, reason="automatic")


# --- responders' replies ------------------------------------------------------------------

REPLIES = ("received", "accept", "decline", "arrive")


def respond(
    conn: Conn, dispatch_id: int, action: str, at: datetime, actor: str, source: str
) -> bool:
    """A responder's reply (API, MQTT, or an arrival inferred from a badge). False: no
    change (a repeat, or the dispatch is closed)."""
    if action not in REPLIES:
        raise DispatchError(f"unknown reply {action!r}")
    with conn.transaction():
        row = conn.execute(
            "SELECT incident_id, community_id, responder_id, state, received_at FROM dispatches"
            " WHERE id = %s FOR UPDATE",
            (dispatch_id,),
        ).fetchone()
        if row is None:
            raise DispatchError(f"no dispatch {dispatch_id}")
        incident_id, community, responder, state, received = row
        detail = {"source": source}
        if action == "received":
            if received is not None:
                return False
            conn.execute("UPDATE dispatches SET received_at = %s WHERE id = %s", (at, dispatch_id))
            name = "received"
        elif state not in OPEN_DISPATCH:
            return False
        elif action == "accept":
            if state == "accepted":
                return False
            conn.execute(
                "UPDATE dispatches SET state = 'accepted', accepted_at = %s,"
                " received_at = coalesce(received_at, %s) WHERE id = %s",
                (at, at, dispatch_id),
            )
            _advance(conn, incident_id, Stage.ACCEPTED, "accepted_at", at)
            name = "accepted"
        elif action == "decline":
            conn.execute(
                "UPDATE dispatches SET state = 'declined', closed_at = %s WHERE id = %s",
                (at, dispatch_id),
            )
            name = "declined"
        else:
            conn.execute(
                "UPDATE dispatches SET state = 'arrived', arrived_at = %s,"
                " accepted_at = coalesce(accepted_at, %s) WHERE id = %s",
                (at, at, dispatch_id),
            )
            _advance(conn, incident_id, Stage.ACCEPTED, "accepted_at", at)
            _advance(conn, incident_id, Stage.ON_SCENE, "arrived_at", at)
            name = "on_scene"
        step(
            conn,
            incident_id,
            community,
            name,
            at,
            actor,
            responder_id=responder,
            dispatch_id=dispatch_id,
            detail=detail,
        )
        if action == "decline":
            _escalate(conn, incident_id, at, reason="declined", from_dispatch=dispatch_id)
    return True


def infer_arrivals(conn: Conn, now: datetime) -> int:
    """Arrivals seen by the building's devices: an access event naming the responder's
    badge, or a wearable entering the building's geofence, after the dispatch."""
    rows = conn.execute(
        "SELECT DISTINCT ON (x.id) x.id, e.ts, e.event, e.device_id FROM dispatches AS x"
        " JOIN incidents AS i ON i.id = x.incident_id"
        " JOIN devices AS d ON d.community_id = x.community_id"
        " JOIN device_events AS e ON e.device_id = d.id"
        " WHERE x.state = ANY(%s) AND i.building IS NOT NULL AND e.ts >= x.dispatched_at"
        " AND e.ts <= %s AND ("
        "   (d.building = i.building AND e.data->>'badge' = x.responder_id)"
        "   OR (e.event = 'geofence_enter' AND e.data->>'building' = i.building"
        "       AND e.data->>'responder' = x.responder_id))"
        " ORDER BY x.id, e.ts",
        (list(OPEN_DISPATCH), now),
    ).fetchall()
    done = 0
    for dispatch_id, ts, event, device in rows:
        done += respond(conn, int(dispatch_id), "arrive", ts, f"device:{device}", event)
    return done


# --- escalation ---------------------------------------------------------------------------


def _escalate(
    conn: Conn,
    incident_id: int,
    at: datetime,
    *,
    reason: str,
    team_id: str | None = None,
    from_dispatch: int | None = None,
) -> list[int]:
    """One rung up the ladder: next on the roster, the leader, then the control room."""
    found = get_incident(conn, incident_id)
    if found is None or found.resolved_at is not None:
        return []
    if team_id is None:
        row = conn.execute(
            "SELECT team_id FROM dispatches WHERE incident_id = %s AND team_id IS NOT NULL"
            " ORDER BY id LIMIT 1",
            (incident_id,),
        ).fetchone()
        kind_team = AUTO_TEAM.get(IncidentType(found.incident_type))
        if row is not None:
            team_id = str(row[0])
        elif kind_team is not None:
            team_id = team_of(conn, found.community_id, found.building, kind_team)
    called = [
        str(r[0])
        for r in conn.execute(
            "SELECT responder_id FROM dispatches WHERE incident_id = %s", (incident_id,)
        )
    ]
    if conn.execute(
        "SELECT 1 FROM incident_steps WHERE incident_id = %s AND step = 'escalated'"
        " AND responder_id IS NULL",
        (incident_id,),
    ).fetchone():
        called.append(CONTROL_ROOM)  # the ladder's top was reached before
    roster: list[str] = []
    leader = None
    if team_id is not None:
        roster = roster_order(conn, team_id, at)
        row = conn.execute("SELECT leader_id FROM teams WHERE id = %s", (team_id,)).fetchone()
        leader = None if row is None else row[0]
    target = next_on_ladder(roster, leader, called)
    if target == CONTROL_ROOM and CONTROL_ROOM in called:
        return []  # nothing above the control room
    bumped = conn.execute(
        "UPDATE incidents SET escalations = escalations + 1 WHERE id = %s RETURNING escalations",
        (incident_id,),
    ).fetchone()
    level = int(bumped[0]) if bumped else 1
    rung = (
        "leader" if target == leader else ("control_room" if target == CONTROL_ROOM else "roster")
    )
    room = conn.execute(
        "SELECT street_control_room, dispatch_webhook_url FROM communities WHERE id = %s",
        (found.community_id,),
    ).fetchone()
    push: dict[str, Any] | None = None
    if target == CONTROL_ROOM:
        # The step is its own outbox: the desk pushes it as it pushes dispatches
        # (alerts/incident_desk.py) and records each channel's delivery here.
        channels = ["mqtt"] + (["webhook"] if room and room[1] else [])
        push = {c: {"state": "pending", "attempts": 0} for c in channels}
    step(
        conn,
        incident_id,
        found.community_id,
        "escalated",
        at,
        SYSTEM,
        responder_id=None if target == CONTROL_ROOM else target,
        dispatch_id=from_dispatch,
        detail={
            "reason": reason,
            "rung": rung,
            "team_id": team_id,
            "control_room": room[0] if room and target == CONTROL_ROOM else None,
            **({"push": push} if push else {}),
        },
    )
    if target == CONTROL_ROOM:
        return []
    return dispatch(
        conn,
        incident_id,
        [target],
        by=SYSTEM,
        at=at,
        team_id=team_id,
        level=level,
        reason=f"escalation: {reason}",
    )


def escalate_due(conn: Conn, now: datetime) -> int:
    """Escalate what ``now`` has missed: dispatches nobody accepted in time, and each
    incident target once. Returns how many escalations were made."""
    done = 0
    with conn.transaction():
        late = conn.execute(
            "SELECT x.id, x.incident_id, x.community_id, i.incident_type FROM dispatches AS x"
            " JOIN incidents AS i ON i.id = x.incident_id"
            " WHERE x.state = 'sent' AND i.resolved_at IS NULL"
            " ORDER BY x.id FOR UPDATE OF x SKIP LOCKED"
        ).fetchall()
        for dispatch_id, incident_id, community, kind in late:
            targets = targets_for(conn, community, kind)
            row = conn.execute(
                "UPDATE dispatches SET state = 'timed_out', closed_at = %s WHERE id = %s"
                " AND dispatched_at + make_interval(secs => %s) <= %s RETURNING responder_id",
                (now, dispatch_id, targets.accept_s, now),
            ).fetchone()
            if row is None:
                continue
            step(
                conn,
                incident_id,
                community,
                "no_answer",
                now,
                SYSTEM,
                responder_id=row[0],
                dispatch_id=dispatch_id,
                detail={"accept_s": targets.accept_s},
            )
            _escalate(conn, int(incident_id), now, reason="no answer", from_dispatch=dispatch_id)
            done += 1
        for found in [Incident(*r) for r in conn.execute(_INCIDENT + " WHERE resolved_at IS NULL")]:
            targets = targets_for(conn, found.community_id, found.incident_type)
            progress = Progress(
                found.opened_at,
                found.acknowledged_at,
                found.dispatched_at,
                found.arrived_at,
                found.resolved_at,
            )
            for kind in due_targets(progress, targets, now, found.escalated):
                claimed = conn.execute(
                    "UPDATE incidents SET escalated = array_append(escalated, %s)"
                    " WHERE id = %s AND NOT %s = ANY(escalated) RETURNING id",
                    (kind.value, found.id, kind.value),
                ).fetchone()
                if claimed is None:
                    continue  # another pass escalated it first
                step(
                    conn,
                    found.id,
                    found.community_id,
                    "target_missed",
                    now,
                    SYSTEM,
                    detail={"target": kind.value, "seconds": targets.seconds(kind)},
                )
                _escalate(conn, found.id, now, reason=f"{kind.value} target missed")
                done += 1
    return done


# --- figures ------------------------------------------------------------------------------


def incident_records(
    conn: Conn, community_id: str, start: datetime, end: datetime
) -> list[IncidentRecord]:
    rows = conn.execute(
        "SELECT i.incident_type, i.opened_at, i.acknowledged_at, i.dispatched_at, i.arrived_at,"
        " i.resolved_at, t.arrival_s, i.escalations FROM incidents AS i"
        " LEFT JOIN incident_targets AS t ON t.community_id = i.community_id"
        "  AND t.incident_type = i.incident_type"
        " WHERE i.community_id = %s AND i.opened_at >= %s AND i.opened_at < %s",
        (community_id, start, end),
    ).fetchall()
    return [
        IncidentRecord(
            kind,
            opened,
            ack,
            sent,
            arrived,
            resolved,
            float(target if target is not None else DEFAULT_TARGETS[IncidentType(kind)].arrival_s),
            int(escalations),
        )
        for kind, opened, ack, sent, arrived, resolved, target, escalations in rows
    ]


# --- views (the API's and the CLI's) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DispatchView:
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


@dataclass(frozen=True, slots=True)
class StepView:
    step: str
    at: datetime
    actor: str
    responder_id: str | None
    dispatch_id: int | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IncidentView:
    """An incident with its alerts, dispatches, timeline and the targets in force."""

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
    dispatches: list[DispatchView]
    timeline: list[StepView]
    targets: Targets

    @property
    def progress(self) -> Progress:
        return Progress(
            self.opened_at,
            self.acknowledged_at,
            self.dispatched_at,
            self.arrived_at,
            self.resolved_at,
        )


_VIEW = (
    "SELECT id, community_id, building, incident_type, title, stage, opened_at,"
    " acknowledged_at, dispatched_at, accepted_at, arrived_at, resolved_at, escalations"
    " FROM incidents"
)
_VIEW_FIELDS = (
    *("id", "community_id", "building", "incident_type", "title", "stage", "opened_at"),
    *("acknowledged_at", "dispatched_at", "accepted_at", "arrived_at", "resolved_at"),
    "escalations",
)


def _view(conn: Conn, row: Sequence[Any]) -> IncidentView:
    incident_id = int(row[0])
    alert_ids = [
        int(a)
        for (a,) in conn.execute(
            "SELECT alert_id FROM incident_alerts WHERE incident_id = %s ORDER BY alert_id",
            (incident_id,),
        )
    ]
    dispatches = [
        DispatchView(r[0], incident_id, *r[1:])
        for r in conn.execute(
            "SELECT x.id, x.responder_id, r.name, x.team_id, x.level, x.state, x.dispatched_at,"
            " x.dispatched_by, x.delivered_at, x.received_at, x.accepted_at, x.arrived_at"
            " FROM dispatches AS x JOIN responders AS r ON r.id = x.responder_id"
            " WHERE x.incident_id = %s ORDER BY x.id",
            (incident_id,),
        )
    ]
    timeline = [
        StepView(*r)
        for r in conn.execute(
            "SELECT step, at, actor, responder_id, dispatch_id, detail FROM incident_steps"
            " WHERE incident_id = %s ORDER BY at, id",
            (incident_id,),
        )
    ]
    targets = targets_for(conn, str(row[1]), str(row[3]))
    base: dict[str, Any] = dict(zip(_VIEW_FIELDS, row, strict=True))
    return IncidentView(
        **base, alert_ids=alert_ids, dispatches=dispatches, timeline=timeline, targets=targets
    )


def incident_view(conn: Conn, incident_id: int) -> IncidentView | None:
    row = conn.execute((_VIEW + " WHERE id = %s").encode(), (incident_id,)).fetchone()
    return None if row is None else _view(conn, row)


def incident_views(
    conn: Conn,
    communities: Communities,
    *,
    community_id: str | None = None,
    open_only: bool = False,
    limit: int,
    newest: str = "opened",
) -> list[IncidentView]:
    """Incidents newest first: by opening time (``newest="opened"``) or by id."""
    scope, params = community_filter(communities)
    terms, values = given((("community_id = %s", community_id),))
    where = [scope, *terms]
    params += values
    if open_only:
        where.append("resolved_at IS NULL")
    order = "opened_at DESC, id DESC" if newest == "opened" else "id DESC"
    query = f"{_VIEW} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
    rows = conn.execute(query.encode(), [*params, limit]).fetchall()
    return [_view(conn, r) for r in rows]


def community_of(conn: Conn, kind: str, object_id: str) -> str | None:
    """The community of a team (``kind="team"``) or a responder (``"responder"``)."""
    table = {"team": "teams", "responder": "responders"}[kind]
    row = conn.execute(
        f"SELECT community_id FROM {table} WHERE id = %s".encode(),  # noqa: S608 - table is one of two constants
        (object_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def reassign(
    conn: Conn,
    incident_id: int,
    community_id: str,
    from_id: str,
    to_id: str,
    *,
    by: str,
    at: datetime,
) -> bool:
    """Call one responder off and send another in their place; False if the first is
    not on the way. ``DispatchError`` if the second cannot be sent."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE dispatches SET state = 'cancelled', closed_at = %s WHERE incident_id = %s"
            " AND responder_id = %s AND state IN ('sent', 'accepted') RETURNING id",
            (at, incident_id, from_id),
        ).fetchone()
        if row is None:
            return False
        step(
            conn,
            incident_id,
            community_id,
            "reassigned",
            at,
            by,
            responder_id=from_id,
            dispatch_id=int(row[0]),
        )
        dispatch(conn, incident_id, [to_id], by=by, at=at, reason="reassigned")
    return True


def open_dispatch_of(conn: Conn, incident_id: int, responder_id: str) -> int | None:
    """The responder's newest dispatch to the incident that is still on its way."""
    row = conn.execute(
        "SELECT id FROM dispatches WHERE incident_id = %s AND responder_id = %s"
        " AND state IN ('sent', 'accepted') ORDER BY id DESC LIMIT 1",
        (incident_id, responder_id),
    ).fetchone()
    return None if row is None else int(row[0])


def dispatch_state(conn: Conn, dispatch_id: int) -> str | None:
    row = conn.execute("SELECT state FROM dispatches WHERE id = %s", (dispatch_id,)).fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True, slots=True)
class MyDispatch:
    """What a responder sees: where to go and what for."""

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


def dispatches_of_user(conn: Conn, user_id: int, limit: int = 100) -> list[MyDispatch]:
    """What was sent to the responder linked to ``user_id``, newest first."""
    rows = conn.execute(
        "SELECT x.id, i.id, i.community_id, i.building, i.incident_type, i.title, i.stage,"
        " x.state, x.dispatched_at, x.accepted_at, x.arrived_at FROM dispatches AS x"
        " JOIN responders AS r ON r.id = x.responder_id JOIN incidents AS i ON i.id = x.incident_id"
        " WHERE r.user_id = %s ORDER BY x.id DESC LIMIT %s",
        (user_id, limit),
    ).fetchall()
    return [MyDispatch(*r) for r in rows]
