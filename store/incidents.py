"""The response to incidents, shared by the API, the CLI and the pipeline's incident
desk (``alerts/incident_desk.py``): alerts grouped into incidents, acknowledged and
resolved; responders dispatched, their replies, and escalation up the ladder.

Functions take a psycopg connection and the time (never the wall clock), so the same
code runs under an injected clock in tests. Writes that belong together run in one
``conn.transaction()`` (a savepoint inside a caller's transaction). The decisions
themselves (roster, targets, ladder) are the pure ``core.roster`` and
``core.incidents``; the statements are those of the tables' writers:
``store.incident_records`` (incidents, the alerts in them, targets) and
``store.dispatch`` (the timeline, dispatches and their deliveries).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.incidents import (
    CONTROL_ROOM,
    IncidentType,
    Progress,
    Stage,
    auto_dispatches,
    classify,
    due_targets,
    next_on_ladder,
)
from store import dispatch as dispatches
from store import incident_records as records
from store.dispatch import DispatchError, step
from store.incident_records import (
    all_targets,
    get_incident,
    incident_of_alert,
    incident_view,
    incident_views,
    set_targets,
    targets_for,
)
from store.places import set_dispatch_gateway
from store.rosters import on_duty_now, roster_order, team_of
from store.rows import Conn, scalar

# DispatchError, the targets, the views, incident_of_alert and set_dispatch_gateway are
# the tables' writers' (store.dispatch, store.incident_records, store.places), named
# here too because the CLI's incident commands import them from this module.
__all__ = [
    "DispatchError",
    "acknowledge",
    "all_targets",
    "auto_dispatch",
    "community_of",
    "dispatch",
    "dispatch_team",
    "escalate_due",
    "incident_of_alert",
    "incident_view",
    "incident_views",
    "infer_arrivals",
    "open_for_alert",
    "reassign",
    "resolve",
    "respond",
    "set_dispatch_gateway",
    "set_targets",
    "sync_alerts",
]

SYSTEM = "system:incident-desk"
# Alerts at these severities open an incident; lower ones join an open one only.
OPENING_SEVERITIES = ("major", "critical")
# Which team an automatic dispatch calls, by incident type.
AUTO_TEAM = {IncidentType.FIRE: "micro_fire_station", IncidentType.INTRUSION: "security"}


# --- alerts become incidents --------------------------------------------------------------


def sync_alerts(conn: Conn, now: datetime) -> list[int]:
    """Group new alerts into incidents, carry operator acknowledgements over, and
    dispatch automatically where the rules say so. Returns the incidents touched."""
    touched: list[int] = []
    with conn.transaction():
        fresh = records.ungrouped_alerts(conn)
        for alert_id, community, building, rule_id, severity, title, raised, cls, resident in fresh:
            kind = classify(rule_id, cls)
            incident = records.open_incident_for(conn, community, building, resident, raised)
            if incident is None:
                if severity not in OPENING_SEVERITIES:
                    continue
                incident = _open_incident(
                    conn, alert_id, community, building, resident, kind, rule_id, title, raised
                )
            else:
                records.take_alert(conn, incident, kind, resident)
                step(
                    conn,
                    incident,
                    community,
                    "attached",
                    raised,
                    f"alert:{alert_id}",
                    detail={"alert_id": alert_id, "rule_id": rule_id, "title": title},
                )
            records.link(conn, alert_id, incident, community)
            touched.append(incident)
        touched += _carry_acknowledgements(conn)
        for incident_id, rule_id, severity in records.auto_dispatch_candidates(conn):
            if not auto_dispatches(rule_id, severity):
                continue
            # Claimed once: the desk and an API request may sync at the same moment.
            if records.claim_auto_dispatch(conn, incident_id):
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
    """A new incident opened by an alert (not linked yet: ``records.link``)."""
    incident = records.open_incident(conn, community, building, resident, kind, title, raised)
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


def open_for_alert(conn: Conn, alert_id: int) -> int | None:
    """The alert's incident, opened now if the desk has not (an operator dispatches
    from an alert below the opening severities). None if there is no such alert."""
    found = incident_of_alert(conn, alert_id)
    if found is not None:
        return found
    alert = records.alert_facts(conn, alert_id)
    if alert is None:
        return None
    community, building, rule_id, title, raised, cls, resident = alert
    kind = classify(rule_id, cls)
    with conn.transaction():
        incident = _open_incident(
            conn, alert_id, community, building, resident, kind, rule_id, title, raised
        )
        records.link(conn, alert_id, incident, community)
    return incident


def _carry_acknowledgements(conn: Conn) -> list[int]:
    """An operator who acknowledged one of an incident's alerts acknowledged the incident."""
    rows = records.newly_acknowledged(conn)
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
        records.advance(conn, incident_id, Stage.ACKNOWLEDGED, "acknowledged_at", at)
        step(conn, incident_id, community or found.community_id, "acknowledged", at, by)


def resolve(conn: Conn, incident_id: int, by: str, at: datetime, note: str = "") -> bool:
    with conn.transaction():
        found = get_incident(conn, incident_id, lock=True)
        if found is None or found.resolved_at is not None:
            return False
        dispatches.close_all(conn, incident_id, at)
        records.advance(conn, incident_id, Stage.RESOLVED, "resolved_at", at)
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
            if dispatches.on_the_way(conn, incident_id, responder):
                continue
            channels = ["mqtt"] + (["webhook"] if gateway and gateway[0] else [])
            dispatch_id = dispatches.add_dispatch(
                conn,
                incident_id,
                found.community_id,
                responder,
                team_id=team_id,
                level=level,
                at=at,
                by=by,
                channels=channels,
            )
            if dispatch_id is None:
                raise DispatchError(f"no responder {responder!r} in {found.community_id}")
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
            records.advance(conn, incident_id, Stage.DISPATCHED, "dispatched_at", at)
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
        incident_id, community, responder, state, received = dispatches.lock_dispatch(
            conn, dispatch_id
        )
        detail = {"source": source}
        if action == "received":
            if received is not None:
                return False
            name = "received"
        elif state not in dispatches.OPEN_DISPATCH:
            return False
        elif action == "accept":
            if state == "accepted":
                return False
            name = "accepted"
        elif action == "decline":
            name = "declined"
        else:
            name = "on_scene"
        dispatches.record_reply(conn, dispatch_id, action, at)
        if action in ("accept", "arrive"):
            records.advance(conn, incident_id, Stage.ACCEPTED, "accepted_at", at)
        if action == "arrive":
            records.advance(conn, incident_id, Stage.ON_SCENE, "arrived_at", at)
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
    done = 0
    for dispatch_id, ts, event, device in dispatches.arrivals_seen(conn, now):
        done += respond(conn, dispatch_id, "arrive", ts, f"device:{device}", event)
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
        first = dispatches.first_team(conn, incident_id)
        kind_team = AUTO_TEAM.get(IncidentType(found.incident_type))
        if first is not None:
            team_id = first
        elif kind_team is not None:
            team_id = team_of(conn, found.community_id, found.building, kind_team)
    called = dispatches.called(conn, incident_id)
    if dispatches.control_room_reached(conn, incident_id):
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
    level = records.count_escalation(conn, incident_id)
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
        # (alerts/incident_desk.py) and records each channel's delivery in it.
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
        for dispatch_id, incident_id, community, kind in dispatches.claim_unanswered(conn):
            targets = targets_for(conn, community, kind)
            responder = dispatches.time_out(conn, dispatch_id, targets.accept_s, now)
            if responder is None:
                continue
            step(
                conn,
                incident_id,
                community,
                "no_answer",
                now,
                SYSTEM,
                responder_id=responder,
                dispatch_id=dispatch_id,
                detail={"accept_s": targets.accept_s},
            )
            _escalate(conn, incident_id, now, reason="no answer", from_dispatch=dispatch_id)
            done += 1
        for found in records.open_incidents(conn):
            targets = targets_for(conn, found.community_id, found.incident_type)
            progress = Progress(
                found.opened_at,
                found.acknowledged_at,
                found.dispatched_at,
                found.arrived_at,
                found.resolved_at,
            )
            for kind in due_targets(progress, targets, now, found.escalated):
                if not records.claim_target(conn, found.id, kind.value):
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


# --- the API's lookups and reassignment ---------------------------------------------------


def community_of(conn: Conn, kind: str, object_id: str) -> str | None:
    """The community of a team (``kind="team"``) or a responder (``"responder"``)."""
    table = {"team": "teams", "responder": "responders"}[kind]
    return scalar(
        conn,
        str,
        f"SELECT community_id FROM {table} WHERE id = %s".encode(),  # noqa: S608 - table is one of two constants
        (object_id,),
    )


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
        cancelled = dispatches.cancel_for(conn, incident_id, from_id, at)
        if cancelled is None:
            return False
        step(
            conn,
            incident_id,
            community_id,
            "reassigned",
            at,
            by,
            responder_id=from_id,
            dispatch_id=cancelled,
        )
        dispatch(conn, incident_id, [to_id], by=by, at=at, reason="reassigned")
    return True
