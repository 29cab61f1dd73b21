"""``/health`` (no credentials) and ``/metrics`` (Prometheus, bearer token)."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import PlainTextResponse

from api.auth import CurrentPrincipal
from api.deps import ConnDep, PoolDep
from api.exposition import CONTENT_TYPE, Figures, render
from api.schemas import Health
from api.scope import set_request_scope
from core.access import Role
from store import metrics as metrics_store

__all__ = ["PROMETHEUS_CONTENT_TYPE", "router"]

router = APIRouter(tags=["operations"])

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE
# A load balancer's probe times out after a few seconds; answer 503 before it does.
HEALTH_TIMEOUT_S = 2.0
# A running worker beats every heartbeat_s (1 s); this many missed beats and its
# pipeline counts as stopped. Generous: a loaded machine delays a beat, not ten.
MISSED_BEATS = 10


@router.get("/health", responses={503: {"model": Health}})
def health(pool: PoolDep, request: Request, response: Response) -> Health:
    """200 when the database answers and no pipeline worker failed or went silent,
    503 otherwise. No credentials needed."""
    try:
        with pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
            workers = metrics_store.worker_health(conn, MISSED_BEATS)
    except psycopg.OperationalError:  # includes PoolTimeout
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", database="unreachable", detail=_gave_up(request))
    failed = [f"{w.worker}: {w.failure}" for w in workers if w.state == "failed"]
    stale = [f"{w.worker}: no heartbeat" for w in workers if w.state == "running" and w.late]
    if failed or stale:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(
            status="unavailable",
            database="ok",
            pipeline="failed" if failed else "stale",
            detail="; ".join([*failed, *stale])[:1000],
        )
    return Health(status="ok", database="ok", pipeline="ok" if workers else "none")


def _gave_up(request: Request) -> str | None:
    """How often the API's pool gave up reconnecting (store.pools), if it did."""
    watch = getattr(request.app.state, "pool_watch", None)
    failures = watch.reconnect_failures if watch is not None else 0
    if not failures:
        return None
    return f"the API's connection pool gave up reconnecting {failures} time(s); still trying"


# Process figures (pipeline counters) are for those who run the control room; figures
# that count every community's devices only for those who may see every community.
_METRICS_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}},
        401: {"description": "No valid token"},
        403: {"description": "Not an operator or administrator"},
    },
)
def metrics(conn: ConnDep, principal: CurrentPrincipal) -> Response:
    """Pipeline counters of every worker (operators and administrators), plus registry
    and dead-letter gauges (only for those who see every community)."""
    if principal.role not in _METRICS_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="metrics are for operators and administrators",
        )
    figures = Figures()
    for worker, updated_at, counters in metrics_store.worker_counters(conn):
        figures.workers[worker] = counters
        figures.saved_at.append(({"worker": worker}, updated_at.timestamp()))
    if principal.communities is None:
        set_request_scope(conn, principal)  # row-level security: every community
        for reason, count in metrics_store.dead_letter_counts(conn):
            figures.dead_letters.append(({"reason": reason}, count))
        for device_class, state, count, fresh in metrics_store.device_counts(conn):
            labels = {"device_class": device_class, "state": state}
            figures.devices.append((labels, count))
            figures.reporting.append((labels, fresh))
    return Response(render(figures), media_type=PROMETHEUS_CONTENT_TYPE)
