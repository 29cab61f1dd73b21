"""``/health`` (no credentials) and ``/metrics`` (Prometheus, bearer token)."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import PlainTextResponse

from api.auth import CurrentPrincipal
from api.deps import ConnDep, PoolDep
from api.exposition import CONTENT_TYPE, Figures, render
from api.schemas import Health
from core.access import Role

__all__ = ["PROMETHEUS_CONTENT_TYPE", "router"]

router = APIRouter(tags=["operations"])

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE
# A load balancer's probe times out after a few seconds; answer 503 before it does.
HEALTH_TIMEOUT_S = 2.0
# A running worker beats every heartbeat_s (1 s); this many missed beats and its
# pipeline counts as stopped. Generous: a loaded machine delays a beat, not ten.
MISSED_BEATS = 10
# Running or failed workers, and whether each one's heartbeat is overdue.
_PIPELINE = (
    "SELECT worker, state, failure,"
    " heartbeat_at < now() - make_interval(secs => heartbeat_s * %s)"
    " FROM pipeline_metrics WHERE state IN ('running', 'failed') ORDER BY worker"
)

_WORKERS = "SELECT worker, updated_at, counters FROM pipeline_metrics"
_DEAD_LETTERS = "SELECT reason, count(*) FROM dead_letters GROUP BY reason"
_DEVICES = (
    "SELECT device_class, state, count(*),"
    " count(*) FILTER (WHERE last_received_at > now() - make_interval("
    "secs => 2 * expected_interval_s))"
    " FROM devices GROUP BY device_class, state"
)


@router.get("/health", responses={503: {"model": Health}})
def health(pool: PoolDep, request: Request, response: Response) -> Health:
    """200 when the database answers and no pipeline worker failed or went silent,
    503 otherwise. No credentials needed."""
    try:
        with pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
            workers = conn.execute(_PIPELINE, (MISSED_BEATS,)).fetchall()
    except psycopg.OperationalError:  # includes PoolTimeout
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", database="unreachable", detail=_gave_up(request))
    failed = [f"{w}: {failure}" for w, state, failure, _ in workers if state == "failed"]
    stale = [f"{w}: no heartbeat" for w, state, _, late in workers if state == "running" and late]
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
    for worker, updated_at, counters in conn.execute(_WORKERS):
        figures.workers[worker] = counters
        figures.saved_at.append(({"worker": worker}, updated_at.timestamp()))
    if principal.communities is None:
        conn.execute("SELECT set_config('sc.communities', '*', true)")  # row-level security
        for reason, count in conn.execute(_DEAD_LETTERS):
            figures.dead_letters.append(({"reason": reason}, count))
        for device_class, state, count, fresh in conn.execute(_DEVICES):
            labels = {"device_class": device_class, "state": state}
            figures.devices.append((labels, count))
            figures.reporting.append((labels, fresh))
    return Response(render(figures), media_type=PROMETHEUS_CONTENT_TYPE)
