"""Dispatches, their deliveries and the incidents' timelines, in the database.

The writer of ``incident_steps`` (each incident's timeline, a control-room push's
outcome included), ``dispatches`` (sent, replied to, timed out, cancelled, delivered)
and ``dispatch_deliveries`` (the outbox the incident desk pushes, with each
attempt's outcome). What to send, to whom and when is decided in
``store.incidents`` (with ``core.incidents`` and ``core.roster``); the incident desk
(``alerts/incident_desk.py``) claims the outbox here and records what it pushed.
Functions take the time (never the wall clock) and run inside the caller's
transaction unless they say otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.types.json import Jsonb

from store.rows import Conn, scalar

__all__ = [
    "OPEN_DISPATCH",
    "ControlRoomPush",
    "Delivery",
    "DispatchError",
    "DispatchView",
    "MyDispatch",
    "StepView",
    "add_dispatch",
    "arrivals_seen",
    "called",
    "cancel_for",
    "claim_control_room_pushes",
    "claim_deliveries",
    "claim_unanswered",
    "close_all",
    "control_room_reached",
    "dispatch_state",
    "dispatch_views",
    "dispatches_of_user",
    "first_team",
    "lock_dispatch",
    "on_the_way",
    "open_dispatch_of",
    "record_control_room_push",
    "record_delivery",
    "record_reply",
    "reply_route",
    "step",
    "time_out",
    "timeline",
]

OPEN_DISPATCH = ("sent", "accepted")


class DispatchError(ValueError):
    """A dispatch or a reply that cannot be done as asked (closed incident, wrong state)."""


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
class StepView:
    step: str
    at: datetime
    actor: str
    responder_id: str | None
    dispatch_id: int | None
    detail: dict[str, Any]


def timeline(conn: Conn, incident_id: int) -> list[StepView]:
    return [
        StepView(*r)
        for r in conn.execute(
            "SELECT step, at, actor, responder_id, dispatch_id, detail FROM incident_steps"
            " WHERE incident_id = %s ORDER BY at, id",
            (incident_id,),
        )
    ]


def control_room_reached(conn: Conn, incident_id: int) -> bool:
    """Whether an escalation of the incident reached the top of the ladder before."""
    return (
        conn.execute(
            "SELECT 1 FROM incident_steps WHERE incident_id = %s AND step = 'escalated'"
            " AND responder_id IS NULL",
            (incident_id,),
        ).fetchone()
        is not None
    )


# --- sending ------------------------------------------------------------------------------


def on_the_way(conn: Conn, incident_id: int, responder_id: str) -> bool:
    """Whether the responder has an open dispatch to the incident."""
    return (
        conn.execute(
            "SELECT 1 FROM dispatches WHERE incident_id = %s AND responder_id = %s"
            " AND state = ANY(%s)",
            (incident_id, responder_id, list(OPEN_DISPATCH)),
        ).fetchone()
        is not None
    )


def add_dispatch(
    conn: Conn,
    incident_id: int,
    community_id: str,
    responder_id: str,
    *,
    team_id: str | None,
    level: int,
    at: datetime,
    by: str,
    channels: list[str],
) -> int | None:
    """A new dispatch and a pending delivery on each channel; None: no such responder in
    the community."""
    row = conn.execute(
        "INSERT INTO dispatches (incident_id, community_id, responder_id, team_id, level,"
        " dispatched_at, dispatched_by)"
        " SELECT %s, %s, r.id, %s, %s, %s, %s FROM responders AS r"
        " WHERE r.id = %s AND r.community_id = %s RETURNING id",
        (
            incident_id,
            community_id,
            team_id,
            level,
            at,
            by,
            responder_id,
            community_id,
        ),
    ).fetchone()
    if row is None:
        return None
    dispatch_id = int(row[0])
    for channel in channels:
        conn.execute(
            "INSERT INTO dispatch_deliveries (dispatch_id, community_id, channel)"
            " VALUES (%s, %s, %s)",
            (dispatch_id, community_id, channel),
        )
    return dispatch_id


def close_all(conn: Conn, incident_id: int, at: datetime) -> None:
    """A resolved incident: dispatches nobody accepted are cancelled, all are closed."""
    conn.execute(
        "UPDATE dispatches SET state = 'cancelled', closed_at = %s"
        " WHERE incident_id = %s AND state = 'sent'",
        (at, incident_id),
    )
    conn.execute(
        "UPDATE dispatches SET closed_at = coalesce(closed_at, %s) WHERE incident_id = %s",
        (at, incident_id),
    )


def cancel_for(conn: Conn, incident_id: int, responder_id: str, at: datetime) -> int | None:
    """Call a responder off; the cancelled dispatch, or None if they were not on the way."""
    return scalar(
        conn,
        int,
        "UPDATE dispatches SET state = 'cancelled', closed_at = %s WHERE incident_id = %s"
        " AND responder_id = %s AND state IN ('sent', 'accepted') RETURNING id",
        (at, incident_id, responder_id),
    )


# --- replies ------------------------------------------------------------------------------


def lock_dispatch(conn: Conn, dispatch_id: int) -> tuple[int, str, str, str, datetime | None]:
    """(incident, community, responder, state, received at) of a dispatch, locked for a
    reply. ``DispatchError`` if there is no such dispatch."""
    row = conn.execute(
        "SELECT incident_id, community_id, responder_id, state, received_at FROM dispatches"
        " WHERE id = %s FOR UPDATE",
        (dispatch_id,),
    ).fetchone()
    if row is None:
        raise DispatchError(f"no dispatch {dispatch_id}")
    incident_id, community, responder, state, received = row
    return incident_id, community, responder, state, received


_REPLY = {
    "received": ("UPDATE dispatches SET received_at = %(at)s WHERE id = %(id)s"),
    "accept": (
        "UPDATE dispatches SET state = 'accepted', accepted_at = %(at)s,"
        " received_at = coalesce(received_at, %(at)s) WHERE id = %(id)s"
    ),
    "decline": ("UPDATE dispatches SET state = 'declined', closed_at = %(at)s WHERE id = %(id)s"),
    "arrive": (
        "UPDATE dispatches SET state = 'arrived', arrived_at = %(at)s,"
        " accepted_at = coalesce(accepted_at, %(at)s) WHERE id = %(id)s"
    ),
}


def record_reply(conn: Conn, dispatch_id: int, action: str, at: datetime) -> None:
    """What a reply (``received``, ``accept``, ``decline``, ``arrive``) changes."""
    conn.execute(_REPLY[action].encode(), {"at": at, "id": dispatch_id})


def arrivals_seen(conn: Conn, now: datetime) -> list[tuple[int, datetime, str, str]]:
    """(dispatch, time, event, device) of the first arrival the building's devices saw
    for each open dispatch: an access event naming the responder's badge, or a wearable
    entering the building's geofence, after the dispatch."""
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
    return [(int(d), ts, str(event), str(device)) for d, ts, event, device in rows]


# --- escalation ---------------------------------------------------------------------------


def claim_unanswered(conn: Conn) -> list[tuple[int, int, str, str]]:
    """(dispatch, incident, community, incident type) of dispatches still waiting for an
    answer on open incidents, locked (another desk skips them)."""
    return [
        (int(d), int(i), str(c), str(k))
        for d, i, c, k in conn.execute(
            "SELECT x.id, x.incident_id, x.community_id, i.incident_type FROM dispatches AS x"
            " JOIN incidents AS i ON i.id = x.incident_id"
            " WHERE x.state = 'sent' AND i.resolved_at IS NULL"
            " ORDER BY x.id FOR UPDATE OF x SKIP LOCKED"
        ).fetchall()
    ]


def time_out(conn: Conn, dispatch_id: int, accept_s: int, now: datetime) -> str | None:
    """Close a dispatch nobody accepted within ``accept_s``; its responder, or None when
    there is still time."""
    return scalar(
        conn,
        str,
        "UPDATE dispatches SET state = 'timed_out', closed_at = %s WHERE id = %s"
        " AND dispatched_at + make_interval(secs => %s) <= %s RETURNING responder_id",
        (now, dispatch_id, accept_s, now),
    )


def first_team(conn: Conn, incident_id: int) -> str | None:
    """The team the incident's first team dispatch called."""
    return scalar(
        conn,
        str,
        "SELECT team_id FROM dispatches WHERE incident_id = %s AND team_id IS NOT NULL"
        " ORDER BY id LIMIT 1",
        (incident_id,),
    )


def called(conn: Conn, incident_id: int) -> list[str]:
    """Every responder dispatched to the incident."""
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT responder_id FROM dispatches WHERE incident_id = %s", (incident_id,)
        )
    ]


# --- reads for the API and the CLI --------------------------------------------------------


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


def dispatch_views(conn: Conn, incident_id: int) -> list[DispatchView]:
    return [
        DispatchView(r[0], incident_id, *r[1:])
        for r in conn.execute(
            "SELECT x.id, x.responder_id, r.name, x.team_id, x.level, x.state, x.dispatched_at,"
            " x.dispatched_by, x.delivered_at, x.received_at, x.accepted_at, x.arrived_at"
            " FROM dispatches AS x JOIN responders AS r ON r.id = x.responder_id"
            " WHERE x.incident_id = %s ORDER BY x.id",
            (incident_id,),
        )
    ]


def open_dispatch_of(conn: Conn, incident_id: int, responder_id: str) -> int | None:
    """The responder's newest dispatch to the incident that is still on its way."""
    return scalar(
        conn,
        int,
        "SELECT id FROM dispatches WHERE incident_id = %s AND responder_id = %s"
        " AND state IN ('sent', 'accepted') ORDER BY id DESC LIMIT 1",
        (incident_id, responder_id),
    )


def dispatch_state(conn: Conn, dispatch_id: int) -> str | None:
    return scalar(conn, str, "SELECT state FROM dispatches WHERE id = %s", (dispatch_id,))


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


# --- the incident desk's outbox -----------------------------------------------------------


def reply_route(conn: Conn, dispatch_id: int) -> tuple[str, str] | None:
    """(community, responder) a dispatch was sent to: whose reply topic may answer it."""
    row = conn.execute(
        "SELECT community_id, responder_id FROM dispatches WHERE id = %s",
        (dispatch_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


class Delivery(NamedTuple):
    """A pending push of a dispatch on one channel, with what its message says."""

    id: int
    channel: str
    attempts: int
    dispatch_id: int
    community_id: str
    responder_id: str
    dispatched_at: datetime
    level: int
    incident_id: int
    incident_type: str
    title: str
    building: str | None
    phone: str | None
    webhook_url: str | None
    webhook_secret: str | None


def claim_deliveries(conn: Conn, limit: int) -> list[Delivery]:
    """Pending deliveries that are due, locked while they are pushed: another worker's
    desk skips them."""
    rows = conn.execute(
        "SELECT d.id, d.channel, d.attempts, x.id, x.community_id, x.responder_id,"
        " x.dispatched_at, x.level, i.id, i.incident_type, i.title, i.building, r.phone,"
        " c.dispatch_webhook_url, c.dispatch_webhook_secret FROM dispatch_deliveries AS d"
        " JOIN dispatches AS x ON x.id = d.dispatch_id"
        " JOIN incidents AS i ON i.id = x.incident_id"
        " JOIN responders AS r ON r.id = x.responder_id"
        " JOIN communities AS c ON c.id = x.community_id"
        " WHERE d.state = 'pending' AND d.next_attempt_at <= now() ORDER BY d.id LIMIT %s"
        " FOR UPDATE OF d SKIP LOCKED",
        (limit,),
    ).fetchall()
    return [Delivery(*r) for r in rows]


def record_delivery(
    conn: Conn,
    delivery: int,
    dispatch_id: int,
    attempts: int,
    error: str | None,
    now: datetime,
    *,
    max_attempts: int,
    retry_s: int,
) -> None:
    """A push's outcome: delivered (the dispatch too, the first time), or the error and a
    later attempt, dead after ``max_attempts``."""
    with conn.transaction():
        if error is None:
            conn.execute(
                "UPDATE dispatch_deliveries SET state = 'delivered', attempts = %s,"
                " delivered_at = %s, last_error = NULL WHERE id = %s",
                (attempts, now, delivery),
            )
            conn.execute(
                "UPDATE dispatches SET delivered_at = coalesce(delivered_at, %s) WHERE id = %s",
                (now, dispatch_id),
            )
        else:
            conn.execute(
                "UPDATE dispatch_deliveries SET attempts = %s, last_error = %s,"
                " state = CASE WHEN %s >= %s THEN 'dead' ELSE 'pending' END,"
                " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
                (attempts, error[:500], attempts, max_attempts, retry_s, delivery),
            )


class ControlRoomPush(NamedTuple):
    """An escalation to the control room with a channel still to push (``detail``'s
    ``push``), and what its message says."""

    step_id: int
    at: datetime
    detail: dict[str, Any]
    incident_id: int
    community_id: str
    building: str | None
    incident_type: str
    title: str
    webhook_url: str | None
    webhook_secret: str | None


def claim_control_room_pushes(conn: Conn, limit: int) -> list[ControlRoomPush]:
    """Control-room escalations of open incidents with a channel still pending, locked
    while they are pushed."""
    rows = conn.execute(
        "SELECT s.id, s.at, s.detail, i.id, i.community_id, i.building, i.incident_type,"
        " i.title, c.dispatch_webhook_url, c.dispatch_webhook_secret"
        " FROM incidents AS i JOIN incident_steps AS s ON s.incident_id = i.id"
        " JOIN communities AS c ON c.id = i.community_id"
        " WHERE i.resolved_at IS NULL AND s.step = 'escalated' AND s.responder_id IS NULL"
        " AND s.detail @? '$.push.* ? (@.state == \"pending\")'"
        " ORDER BY s.id LIMIT %s FOR UPDATE OF s SKIP LOCKED",
        (limit,),
    ).fetchall()
    return [ControlRoomPush(*r) for r in rows]


def record_control_room_push(conn: Conn, step_id: int, push: dict[str, Any]) -> None:
    """Each channel's state, attempts and error, back into the escalation's step."""
    conn.execute(
        "UPDATE incident_steps SET detail = jsonb_set(detail, '{push}', %s) WHERE id = %s",
        (Jsonb(push), step_id),
    )
