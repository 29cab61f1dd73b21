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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.alert_hub import AlertHub, TooManyStreams
from api.auth import CurrentToken, Principal, TokenInfo, require_token
from api.cursors import (
    AfterQuery,
    LimitQuery,
    decode_position,
    encode_position,
    filters_of,
    model_page,
)
from api.deps import POOL_TIMEOUT_S, ConnDep, Pool, PoolDep, SettingsDep, page_size
from api.problems import body_error
from api.schemas import Page, Public
from api.scope import (
    COMMUNITY_HINT,
    AlertId,
    Authorized,
    WindowId,
    body_community,
    body_device,
    set_request_scope,
    unknown_in_body,
)
from core.rules import SEVERITIES, AlertState, Severity
from store import alert_reads, maintenance_windows
from store import alerts as alerts_store

__all__ = [
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

# At most this many missed events are replayed to a client that reconnects.
REPLAY_MAX = 1_000
_IN = ConfigDict(frozen=True, extra="forbid")


class AlertPublic(Public):
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


class AlertsPublic(Page):
    data: list[AlertPublic]


class HistoryPublic(Public):
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


def _actor(token: TokenInfo) -> str:
    return f"token:{token.name}"


def _public(record: alert_reads.AlertRecord) -> AlertPublic:
    return AlertPublic.model_validate(record, from_attributes=True)


def _not_found(alert_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no alert {alert_id}")


@dataclass(frozen=True, slots=True)
class _AlertQuery:
    """``GET /alerts``'s filters and page (a dependency: FastAPI reads the fields from
    the query string)."""

    state: Annotated[list[AlertState] | None, Query(description="Repeat for several")] = None
    severity: Annotated[list[Severity] | None, Query()] = None
    min_severity: Severity | None = None
    community_id: str | None = None
    device_id: str | None = None
    rule_id: str | None = None
    active: Annotated[bool | None, Query(description="Not resolved (true) or resolved")] = None
    since: Annotated[AwareDatetime | None, Query(description="Raised at or after")] = None
    until: Annotated[AwareDatetime | None, Query(description="Raised before")] = None
    limit: LimitQuery = None
    after: AfterQuery = None

    def filters(self) -> dict[str, Any]:
        """The filters as ``store.alert_reads.list_alerts`` takes them: states and
        severities by value, the page aside."""
        filters = filters_of(self)
        filters["states"] = [s.value for s in filters.pop("state") or ()]
        filters["severities"] = [s.value for s in filters.pop("severity") or ()]
        return filters


@router.get("")
def list_alerts(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    query: Annotated[_AlertQuery, Depends()],
) -> AlertsPublic:
    """Alerts, newest first, filtered; pass ``next_cursor`` as ``after`` for the next page."""
    size = page_size(settings, query.limit)
    before = decode_position(query.after, int) if query.after is not None else None
    records = alert_reads.list_alerts(
        conn, principal.communities, limit=size + 1, before=before, **query.filters()
    )
    rows, cursor = model_page(
        records, size, AlertPublic, lambda a: encode_position(a.raised_at, a.id)
    )
    return AlertsPublic(data=rows, next_cursor=cursor)


@router.get("/{alert_id}")
def get_alert(conn: ConnDep, alert_id: AlertId) -> AlertDetail:
    """One alert with its full history (the audit) and, for a flood group, its members."""
    alert = alert_reads.find_alert(conn, alert_id)
    if alert is None:
        raise _not_found(alert_id)
    history = [
        HistoryPublic.model_validate(h, from_attributes=True)
        for h in alert_reads.history_of(conn, alert_id)
    ]
    members = alert_reads.group_members(conn, alert_id)
    return AlertDetail(**_public(alert).model_dump(), history=history, members=members)


def _transitioned(conn: ConnDep, alert_id: int, change: Callable[[], object]) -> AlertDetail:
    try:
        done = change()
    except alerts_store.AlertConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if done is None:
        raise _not_found(alert_id)
    return get_alert(conn, alert_id)


@router.post("/{alert_id}/ack")
def acknowledge(
    conn: ConnDep, token: CurrentToken, alert_id: AlertId, body: AckBody | None = None
) -> AlertDetail:
    """Acknowledge an open (or suppressed) alert: escalation stops. 409 if it is not open."""
    note = body.note if body else ""
    return _transitioned(
        conn,
        alert_id,
        lambda: alerts_store.acknowledge(conn, alert_id, actor=_actor(token), note=note),
    )


@router.post("/{alert_id}/resolve")
def resolve(
    conn: ConnDep, token: CurrentToken, alert_id: AlertId, body: ResolveBody
) -> AlertDetail:
    """Resolve with a note saying why. 409 if already resolved."""
    return _transitioned(
        conn,
        alert_id,
        lambda: alerts_store.resolve(conn, alert_id, actor=_actor(token), note=body.note),
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


def _missed(pool: Pool, principal: Principal, after: int) -> list[dict[str, Any]]:
    """What a reconnecting client missed, within its communities (row-level security
    as for every request, and _sees on top)."""
    with pool.connection(timeout=POOL_TIMEOUT_S) as conn, conn.transaction():
        set_request_scope(conn, principal)
        return alert_reads.missed_events(conn, after, REPLAY_MAX)


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


class MaintenancePublic(Public):
    id: int
    community_id: str
    device_id: str | None
    building: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


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
        raise body_error("ends_at", "ends_at must be after starts_at")
    if body.device_id is not None and body.building is not None:
        raise body_error("building", "give a device_id or a building, not both")
    try:
        created = maintenance_windows.create_maintenance(
            conn,
            **body.model_dump(exclude={"starts_at"}),
            starts_at=starts,
            created_by=_actor(token),
        )
    except maintenance_windows.MaintenanceRefused as exc:
        # Answered as api.scope answers for another community's: ids cannot be probed.
        if exc.field == "community_id":
            raise unknown_in_body("community_id", body.community_id, COMMUNITY_HINT) from None
        raise unknown_in_body("device_id", str(body.device_id)) from None
    return MaintenancePublic.model_validate(created, from_attributes=True)


@maintenance_router.get("")
def list_maintenance(
    conn: ConnDep, principal: Authorized, community_id: str | None = None, current: bool = True
) -> list[MaintenancePublic]:
    """Maintenance windows; by default only those not ended yet."""
    windows = maintenance_windows.list_maintenance(
        conn, principal.communities, community_id=community_id, current=current
    )
    return [MaintenancePublic.model_validate(w, from_attributes=True) for w in windows]


@maintenance_router.delete("/{window_id}", status_code=status.HTTP_204_NO_CONTENT)
def end_maintenance(conn: ConnDep, _token: CurrentToken, window_id: WindowId) -> None:
    """End a window now (alerts are no longer suppressed from the next reload, ~1 s)."""
    if not maintenance_windows.end_maintenance(conn, window_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no current window {window_id}")
