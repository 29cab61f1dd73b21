"""``/api/v1/alerts``: list and filter, one alert with its history, acknowledge, resolve;
``/api/v1/alerts/stream``: the live stream (Server-Sent Events); ``/api/v1/maintenance``.

The live stream relays the ``pg_notify`` that the engine's alert transaction
(and ack/resolve here) sends on commit: a dashboard hears of an alert as soon
as it is committed, without polling. Each event's id is the alert-history id;
a client that reconnects with ``Last-Event-ID`` first gets what it missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import psycopg
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from psycopg.rows import class_row
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.alert_hub import AlertHub, TooManyStreams
from api.auth import CurrentToken, Principal, TokenInfo, require_token
from api.cursors import AfterQuery, LimitQuery, decode_position, encode_position
from api.deps import POOL_TIMEOUT_S, ConnDep, Pool, PoolDep, SettingsDep, page_size
from api.scope import (
    COMMUNITY_HINT,
    AlertId,
    Authorized,
    WindowId,
    body_community,
    body_device,
    community_clause,
    scope_setting,
    unknown_in_body,
)
from core.rules import SEVERITIES, AlertState, Severity

__all__ = [
    "NOTIFY_CHANNEL",
    "AlertDetail",
    "AlertPublic",
    "AlertsPublic",
    "maintenance_router",
    "router",
    "stream_router",
]

router = APIRouter(prefix="/alerts", tags=["alerts"])
maintenance_router = APIRouter(prefix="/maintenance", tags=["alerts"])
# Outside the v1 router: that one's auth holds a pooled connection for the whole
# request, and a stream lasts hours. This one checks the token and lets go.
stream_router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

NOTIFY_CHANNEL = "sc_alerts"  # alerts.store.NOTIFY_CHANNEL (api does not import alerts)
# At most this many missed events are replayed to a client that reconnects.
REPLAY_MAX = 1_000
_OUT = ConfigDict(frozen=True)
_IN = ConfigDict(frozen=True, extra="forbid")


class AlertPublic(BaseModel):
    model_config = _OUT

    id: int
    rule_id: str
    subject: str = Field(description="'device:<id>', 'building:<community>/<name>', ...")
    community_id: str
    device_id: str | None
    building: str | None
    rule_type: str
    severity: Severity
    initial_severity: Severity
    state: AlertState
    title: str
    details: dict[str, Any]
    occurrences: int
    first_seen: datetime = Field(description="When the condition began (device clock)")
    last_seen: datetime
    raised_at: datetime = Field(description="When the engine opened the alert")
    condition_cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    escalation_level: int
    group_id: int | None = Field(description="The flood group this alert belongs to")


class AlertsPublic(BaseModel):
    model_config = _OUT

    data: list[AlertPublic]
    next_cursor: str | None


class HistoryPublic(BaseModel):
    model_config = _OUT

    id: int
    at: datetime
    action: str
    actor: str
    from_state: str | None
    to_state: str
    severity: str
    note: str
    details: dict[str, Any]


class AlertDetail(AlertPublic):
    history: list[HistoryPublic]
    members: list[int] = Field(description="Alerts grouped under this one (flood control)")


class AckBody(BaseModel):
    model_config = _IN

    note: Annotated[str, Field(max_length=2000)] = ""


class ResolveBody(BaseModel):
    model_config = _IN

    note: Annotated[str, Field(min_length=1, max_length=2000, description="Why it is resolved")]


_COLUMNS = (
    "id, rule_id, subject, community_id, device_id, building, rule_type, severity,"
    " initial_severity, state, title, details, occurrences, first_seen, last_seen, raised_at,"
    " condition_cleared_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by,"
    " resolution_note, escalation_level, group_id"
)


def _actor(token: TokenInfo) -> str:
    return f"token:{token.name}"


def _get(conn: psycopg.Connection[Any], alert_id: int, *, lock: bool = False) -> AlertPublic:
    query = f"SELECT {_COLUMNS} FROM alerts WHERE id = %s" + (" FOR UPDATE" if lock else "")  # noqa: S608 - constant columns
    with conn.cursor(row_factory=class_row(AlertPublic)) as cur:
        found = cur.execute(query, (alert_id,)).fetchone()
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no alert {alert_id}")
    return found


@router.get("")
def list_alerts(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    state: Annotated[list[AlertState] | None, Query(description="Repeat for several")] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    min_severity: Severity | None = None,
    community_id: str | None = None,
    device_id: str | None = None,
    rule_id: str | None = None,
    active: Annotated[bool | None, Query(description="Not resolved (true) or resolved")] = None,
    since: Annotated[AwareDatetime | None, Query(description="Raised at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Raised before")] = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> AlertsPublic:
    """Alerts, newest first, filtered; pass ``next_cursor`` as ``after`` for the next page."""
    size = page_size(settings, limit)
    scope, params = community_clause(principal)
    where = [scope]
    for column, values in (("state", state), ("severity", severity)):
        if values:
            where.append(f"{column} = ANY(%s)")
            params.append([v.value for v in values])
    if min_severity is not None:
        where.append("severity = ANY(%s)")
        params.append([s.value for s in SEVERITIES[SEVERITIES.index(min_severity) :]])
    for column, value in (
        ("community_id", community_id),
        ("device_id", device_id),
        ("rule_id", rule_id),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if active is not None:
        where.append("state <> 'resolved'" if active else "state = 'resolved'")
    if since is not None:
        where.append("raised_at >= %s")
        params.append(since)
    if until is not None:
        where.append("raised_at < %s")
        params.append(until)
    if after is not None:
        ts, key = decode_position(after, int)
        where.append("(raised_at, id) < (%s, %s)")
        params += [ts, key]
    query = (
        f"SELECT {_COLUMNS} FROM alerts WHERE {' AND '.join(where)}"  # noqa: S608 - fixed fragments
        " ORDER BY raised_at DESC, id DESC LIMIT %s"
    )
    with conn.cursor(row_factory=class_row(AlertPublic)) as cur:
        rows = cur.execute(query, [*params, size + 1]).fetchall()
    more = len(rows) > size
    rows = rows[:size]
    cursor = encode_position(rows[-1].raised_at, rows[-1].id) if more else None
    return AlertsPublic(data=rows, next_cursor=cursor)


@router.get("/{alert_id}")
def get_alert(conn: ConnDep, alert_id: AlertId) -> AlertDetail:
    """One alert with its full history (the audit) and, for a flood group, its members."""
    alert = _get(conn, alert_id)
    with conn.cursor(row_factory=class_row(HistoryPublic)) as cur:
        history = cur.execute(
            "SELECT id, at, action, actor, from_state, to_state, severity, note, details"
            " FROM alert_history WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        ).fetchall()
    members = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM alerts WHERE group_id = %s ORDER BY id", (alert_id,)
        ).fetchall()
    ]
    return AlertDetail(**alert.model_dump(), history=history, members=members)


def _transition(
    conn: psycopg.Connection[Any],
    alert_id: int,
    *,
    allowed: tuple[AlertState, ...],
    update: str,
    params: tuple[object, ...],
    action: str,
    actor: str,
    note: str,
) -> AlertDetail:
    with conn.transaction():
        alert = _get(conn, alert_id, lock=True)
        if alert.state not in allowed:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"alert {alert_id} is {alert.state.value}: cannot be {action}",
            )
        conn.execute(
            f"UPDATE alerts SET {update}, updated_at = clock_timestamp() WHERE id = %s",  # noqa: S608 - constant columns, values are parameters
            (*params, alert_id),
        )
        after = _get(conn, alert_id)
        row = conn.execute(
            "INSERT INTO alert_history (alert_id, action, actor, from_state, to_state, severity,"
            " note) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (alert_id, action, actor, alert.state.value, after.state.value, after.severity, note),
        ).fetchone()
        assert row is not None
        payload = {
            "action": action,
            **after.model_dump(
                mode="json",
                include={
                    "id",
                    "rule_id",
                    "subject",
                    "community_id",
                    "device_id",
                    "building",
                    "rule_type",
                    "severity",
                    "state",
                    "title",
                    "occurrences",
                    "group_id",
                },
            ),
            "history_id": int(row[0]),
            "actor": actor,
        }
        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, json.dumps(payload)))
    return get_alert(conn, alert_id)


@router.post("/{alert_id}/ack")
def acknowledge(
    conn: ConnDep, token: CurrentToken, alert_id: AlertId, body: AckBody | None = None
) -> AlertDetail:
    """Acknowledge an open (or suppressed) alert: escalation stops. 409 if it is not open."""
    actor = _actor(token)
    return _transition(
        conn,
        alert_id,
        allowed=(AlertState.OPEN, AlertState.SUPPRESSED),
        update="state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s",
        params=(actor,),
        action="acknowledged",
        actor=actor,
        note=body.note if body else "",
    )


@router.post("/{alert_id}/resolve")
def resolve(
    conn: ConnDep, token: CurrentToken, alert_id: AlertId, body: ResolveBody
) -> AlertDetail:
    """Resolve with a note saying why. 409 if already resolved."""
    actor = _actor(token)
    return _transition(
        conn,
        alert_id,
        allowed=(AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.SUPPRESSED),
        update="state = 'resolved', resolved_at = now(), resolved_by = %s, resolution_note = %s",
        params=(actor, body.note),
        action="resolved",
        actor=actor,
        note=body.note,
    )


# -- live stream ------------------------------------------------------------------------

_stream_bearer = HTTPBearer(auto_error=False, description="A token from `smartcommunity token`")
# A stream re-checks its token this often with nothing to send, and before every
# event: a revoked token or a disabled user ends it within this long.
RECHECK_S = 2.0


@dataclass(frozen=True, slots=True)
class StreamCaller:
    principal: Principal
    credentials: HTTPAuthorizationCredentials


def _check_token(pool: Pool, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The bearer check of every route, on a connection returned to the pool at once."""
    with pool.connection(timeout=POOL_TIMEOUT_S) as conn, conn.transaction():
        return require_token(conn, credentials)


def stream_token(
    pool: PoolDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_stream_bearer)],
) -> StreamCaller:
    principal = _check_token(pool, credentials)
    assert credentials is not None  # require_token answered 401 otherwise
    return StreamCaller(principal, credentials)


def _wanted(payload: dict[str, Any], community_id: str | None, floor: int) -> bool:
    if community_id is not None and payload.get("community_id") != community_id:
        return False
    severity = payload.get("severity")
    return severity in SEVERITIES and SEVERITIES.index(Severity(severity)) >= floor


def _sees(principal: Principal, payload: dict[str, Any]) -> bool:
    """Only alerts of the caller's communities (api.scope holds the rule for the rest)."""
    community = payload.get("community_id")
    return isinstance(community, str) and principal.sees(community)


def _event(payload: dict[str, Any]) -> ServerSentEvent:
    history_id = payload.get("history_id") or None
    return ServerSentEvent(
        data=payload,
        event=str(payload.get("action", "alert")),
        id=str(history_id) if history_id else None,
    )


_MISSED = """
SELECT h.id, h.action, h.actor, h.at, a.id, a.rule_id, a.subject, a.community_id, a.device_id,
       a.building, a.rule_type, h.severity, h.to_state, a.title, a.occurrences, a.group_id
  FROM alert_history AS h JOIN alerts AS a ON a.id = h.alert_id
 WHERE h.id > %s ORDER BY h.id LIMIT %s
"""


def _missed(pool: Pool, principal: Principal, after: int) -> list[dict[str, Any]]:
    """What a reconnecting client missed, within its communities (row-level security
    as for every request, and _sees on top)."""
    with pool.connection(timeout=POOL_TIMEOUT_S) as conn, conn.transaction():
        conn.execute("SELECT set_config('sc.communities', %s, true)", (scope_setting(principal),))
        rows = conn.execute(_MISSED, (after, REPLAY_MAX)).fetchall()
    return [
        {
            "history_id": row[0],
            "action": row[1],
            "actor": row[2],
            "at": row[3].astimezone(UTC).isoformat(),
            "id": row[4],
            "rule_id": row[5],
            "subject": row[6],
            "community_id": row[7],
            "device_id": row[8],
            "building": row[9],
            "rule_type": row[10],
            "severity": row[11],
            "state": row[12],
            "title": row[13],
            "occurrences": row[14],
            "group_id": row[15],
            "replayed": True,
        }
        for row in rows
    ]


def _hub(request: Request) -> AlertHub:
    return cast(AlertHub, request.app.state.alert_hub)


def stream_slot(
    request: Request, settings: SettingsDep, caller: Annotated[StreamCaller, Depends(stream_token)]
) -> StreamCaller:
    """429 when the user already has as many streams open as allowed."""
    if _hub(request).streams_of(caller.principal.user_id) >= settings.api.max_streams_per_user:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"at most {settings.api.max_streams_per_user} open alert streams per user",
        )
    return caller


@stream_router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={401: {"description": "No valid token"}, 429: {"description": "Too many streams"}},
)
async def stream_alerts(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    caller: Annotated[StreamCaller, Depends(stream_slot)],
    community_id: Annotated[str | None, Query(max_length=64)] = None,
    min_severity: Severity = Severity.INFO,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Alert transitions as they are committed (Server-Sent Events).

    Event type = the action (``raised``, ``repeated``, ``severity_raised``,
    ``escalated``, ``acknowledged``, ``resolved``, ``auto_resolved`` ...), data =
    the alert summary as JSON, id = the history id (send it back as
    ``Last-Event-ID`` to get what was missed while disconnected). The stream ends
    within seconds of its token being revoked or its user disabled.
    """
    hub = _hub(request)
    floor = SEVERITIES.index(min_severity)
    principal = caller.principal
    try:
        subscriber = hub.subscribe(principal.user_id, settings.api.max_streams_per_user)
    except TooManyStreams:
        return  # opened meanwhile by another request of the same user
    try:
        if last_event_id is not None and last_event_id.isdigit():
            missed = await run_in_threadpool(_missed, pool, principal, int(last_event_id))
            for payload in missed:
                if _wanted(payload, community_id, floor) and _sees(principal, payload):
                    yield _event(payload)
        while not await request.is_disconnected():
            try:
                raw = await asyncio.wait_for(subscriber.queue.get(), timeout=RECHECK_S)
            except TimeoutError:
                raw = ""
            if raw is None:
                return  # closed by the hub: the client reconnects and is replayed
            try:
                principal = await run_in_threadpool(_check_token, pool, caller.credentials)
            except HTTPException:
                return  # revoked, expired or disabled: no further event
            if not raw:
                continue
            try:
                payload = json.loads(raw)
            except ValueError:
                continue
            wanted = isinstance(payload, dict) and _wanted(payload, community_id, floor)
            if wanted and _sees(principal, payload):
                yield _event(payload)
    finally:
        hub.unsubscribe(subscriber)


# -- maintenance ------------------------------------------------------------------------


class MaintenanceCreate(BaseModel):
    model_config = _IN

    community_id: str
    device_id: str | None = Field(default=None, description="One device ...")
    building: str | None = Field(default=None, description="... or one building ...")
    # ... or, with neither, the whole community.
    starts_at: AwareDatetime | None = Field(default=None, description="Default: now")
    ends_at: AwareDatetime
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class MaintenancePublic(BaseModel):
    model_config = _OUT

    id: int
    community_id: str
    device_id: str | None
    building: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


_MAINTENANCE = (
    "id, community_id, device_id, building, starts_at, ends_at, reason, created_by, created_at"
)


def _field_error(field: str, msg: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}],
    )


@maintenance_router.post("", status_code=status.HTTP_201_CREATED)
def start_maintenance(
    request: Request, conn: ConnDep, token: Authorized, body: MaintenanceCreate
) -> MaintenancePublic:
    """Put a device, a building or a community in maintenance: its alerts are recorded as
    suppressed and nobody is notified until ``ends_at``."""
    body_community(conn, token, request, body.community_id)
    if body.device_id is not None:
        body_device(conn, token, request, body.device_id)
    starts = body.starts_at or datetime.now(UTC)
    if body.ends_at <= starts:
        raise _field_error("ends_at", "ends_at must be after starts_at")
    if body.device_id is not None and body.building is not None:
        raise _field_error("building", "give a device_id or a building, not both")
    try:
        with conn.cursor(row_factory=class_row(MaintenancePublic)) as cur:
            created = cur.execute(
                "INSERT INTO maintenance_windows (community_id, device_id, building, starts_at,"  # noqa: S608 - constant columns, values are parameters
                " ends_at, reason, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_MAINTENANCE}",
                (
                    body.community_id,
                    body.device_id,
                    body.building,
                    starts,
                    body.ends_at,
                    body.reason,
                    _actor(token),
                ),
            ).fetchone()
    except psycopg.errors.ForeignKeyViolation as exc:
        # Answered as api.scope answers for another community's: ids cannot be probed.
        if "community" in (exc.diag.constraint_name or ""):
            raise unknown_in_body("community_id", body.community_id, COMMUNITY_HINT) from None
        raise unknown_in_body("device_id", str(body.device_id)) from None
    assert created is not None
    return created


@maintenance_router.get("")
def list_maintenance(
    conn: ConnDep, principal: Authorized, community_id: str | None = None, current: bool = True
) -> list[MaintenancePublic]:
    """Maintenance windows; by default only those not ended yet."""
    scope, params = community_clause(principal)
    where = [scope]
    if community_id is not None:
        where.append("community_id = %s")
        params.append(community_id)
    if current:
        where.append("ends_at > now()")
    with conn.cursor(row_factory=class_row(MaintenancePublic)) as cur:
        return cur.execute(
            f"SELECT {_MAINTENANCE} FROM maintenance_windows WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY starts_at",
            params,
        ).fetchall()


@maintenance_router.delete("/{window_id}", status_code=status.HTTP_204_NO_CONTENT)
def end_maintenance(conn: ConnDep, _token: CurrentToken, window_id: WindowId) -> None:
    """End a window now (alerts are no longer suppressed from the next reload, ~1 s)."""
    cur = conn.execute(
        "UPDATE maintenance_windows SET ends_at = greatest(starts_at + interval '1 microsecond',"
        " now()) WHERE id = %s AND ends_at > now()",
        (window_id,),
    )
    if cur.rowcount != 1:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no current window {window_id}")
