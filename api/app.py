"""The FastAPI application.

Run with ``uvicorn --factory api.app:app_from_env`` or build one with
``create_app(settings)``. Start-up applies pending migrations, so the API works
on a fresh database, then opens the connection pool.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from api.alert_hub import AlertHub
from api.dashboard import pages as dashboard_pages
from api.deps import MAX_BODY_BYTES, Pool
from api.routes import (
    alerts,
    audit,
    buildings,
    communities,
    dashboard_api,
    dead_letters,
    devices,
    incidents,
    ops,
    readings,
    reports,
    residents,
    responders,
    rules,
    series,
    users,
    visits,
)
from api.scope import ERROR_RESPONSES, authorize, check_routes
from core.errors import ConfigurationError
from core.settings import Settings
from store.alerts import NOTIFY_CHANNEL
from store.pools import CONNECT_TIMEOUT_S, RECONNECT_TIMEOUT_S, PoolWatch
from store.schema import upgrade
from store.sessions import left_over_scope, set_role

__all__ = ["API_VERSION", "ScopeLeftOver", "app_from_env", "create_app", "pool_hooks"]

_LOG = logging.getLogger(__name__)

API_VERSION = "0.1.0"
# The threadpool runs up to 40 requests at once; most are one short query, so a
# few connections serve them, and the database keeps room for the pipeline.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
# Fail start-up instead of serving 503s when the database is not there at all.
POOL_OPEN_TIMEOUT_S = 10.0
RETRY_AFTER_S = "5"


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    _LOG.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "database unavailable, retry later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER_S},
    )


def _refused_value(request: Request, exc: Exception) -> JSONResponse:
    # A value that passed validation but that PostgreSQL cannot hold (a NUL inside a
    # string, a number past its column's range, a lone surrogate): the client's input.
    _LOG.info("value refused by the database for %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {
            "detail": [
                {"loc": [], "msg": "a value the database cannot store", "type": "value_error"}
            ]
        },
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    # A constraint the routes did not foresee (a null where a value is required, a
    # reference to something gone): the request conflicts with what is stored.
    _LOG.warning("constraint refused %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the request conflicts with stored data"},
        status_code=status.HTTP_409_CONFLICT,
    )


def _row_security(request: Request, exc: Exception) -> JSONResponse:
    # Row-level security refused a write into another community: a route's own check
    # should have answered first (api/scope.py); answer as for what does not exist.
    _LOG.warning("row-level security refused %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "not found"}, status_code=status.HTTP_404_NOT_FOUND)


_Hook = Callable[[psycopg.Connection[Any]], None]


class ScopeLeftOver(RuntimeError):
    """A pooled connection came back with a caller's actor or communities set."""


def pool_hooks(role: str) -> tuple[_Hook, _Hook]:
    def configure(conn: psycopg.Connection[Any]) -> None:
        # Every pooled connection runs as the role without BYPASSRLS (migration 0007).
        if role:
            set_role(conn, role)

    def reset(conn: psycopg.Connection[Any]) -> None:
        # A request's actor and communities are local to its transaction (api.deps.
        # get_conn), so a returned connection holds none. Should a session-level
        # value ever be set, the connection is not handed out again: the pool
        # discards a connection whose reset raises.
        row = left_over_scope(conn)
        if row is not None and any(row):
            raise ScopeLeftOver(f"a returned connection still holds a caller's scope: {row}")

    return configure, reset


def create_app(settings: Settings) -> FastAPI:
    """The API application for ``settings``; needs ``settings.database_url``."""
    url = settings.database_url
    if url is None:
        raise ConfigurationError("the API needs SC_DATABASE_URL (or the demo's embedded server)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(upgrade, url)
        configure, reset = pool_hooks(settings.api.database_role)
        watch = PoolWatch()
        app.state.pool_watch = watch
        pool: Pool = ConnectionPool(
            url,
            open=False,
            check=ConnectionPool.check_connection,
            configure=configure,
            reset=reset,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            # The pipeline's pools' settings (store.pools): attempts at most ~8 s
            # apart, and each given-up reconnection counted for /health.
            reconnect_timeout=RECONNECT_TIMEOUT_S,
            reconnect_failed=watch.gave_up,
            name="api",
        )
        await run_in_threadpool(pool.open, wait=True, timeout=POOL_OPEN_TIMEOUT_S)
        app.state.pool = pool
        # One LISTEN for every alert stream of this process (api/alert_hub.py).
        hub = AlertHub(url, NOTIFY_CHANNEL)
        await hub.start()
        app.state.alert_hub = hub
        try:
            yield
        finally:
            await hub.stop()
            await run_in_threadpool(pool.close)

    app = FastAPI(
        title="SmartCommunity API",
        version=API_VERSION,
        summary="Devices, readings, events and dead letters of the SmartCommunity platform.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(psycopg.DataError, _refused_value)
    # A lone surrogate ("\ud800") is valid JSON but cannot be encoded for PostgreSQL.
    app.add_exception_handler(UnicodeEncodeError, _refused_value)
    app.add_exception_handler(psycopg.errors.InsufficientPrivilege, _row_security)
    app.add_exception_handler(psycopg.IntegrityError, _conflict)
    # null for a field that must have a value (a PATCH with {"name": null}): invalid input.
    app.add_exception_handler(psycopg.errors.NotNullViolation, _refused_value)

    # authorize: every route's role and community check, in one place (api/scope.py).
    v1 = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(authorize)],
        max_body_size=MAX_BODY_BYTES,
        responses=ERROR_RESPONSES,
    )
    for module in (communities, buildings, devices, readings, series, residents, dead_letters):
        v1.include_router(module.router)
    v1.include_router(visits.router)  # care visits (docs/visits.md)
    v1.include_router(reports.router)  # a community's monthly service report
    v1.include_router(dashboard_api.router)
    # Responders, rosters, incidents and dispatch (docs/incidents.md).
    for router in (responders.router, responders.teams_router, responders.duty_router):
        v1.include_router(router)
    for router in (
        incidents.router,
        incidents.alerts_router,
        incidents.me_router,
        incidents.targets_router,
    ):
        v1.include_router(router)
    for router in (users.router, users.tokens_router, users.me_router, audit.router):
        v1.include_router(router)
    for router in (alerts.router, alerts.maintenance_router, rules.router, rules.webhooks_router):
        v1.include_router(router)
    app.include_router(alerts.stream_router)
    app.include_router(ops.router)
    app.include_router(v1)
    app.include_router(dashboard_pages.router)  # the control-room page, at /
    check_routes(app)  # fail closed: no route takes an object id without its check
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from the ``SC_`` environment."""
    return create_app(Settings())
