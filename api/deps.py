"""Request dependencies: the settings, a pooled database connection, the page size, the clock.

Routes are plain ``def``: FastAPI runs them (and these dependencies) in its
threadpool, so the blocking psycopg calls never sit inside the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from core.settings import Settings

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_BODY_BYTES",
    "POOL_TIMEOUT_S",
    "Clock",
    "ClockDep",
    "ConnDep",
    "Pool",
    "PoolDep",
    "SettingsDep",
    "get_conn",
    "page_size",
]

_LOG = logging.getLogger(__name__)

Pool = ConnectionPool[psycopg.Connection[Any]]
Clock = Callable[[], datetime]

# A request that cannot get a connection in 5 s gets a 503 instead of waiting on.
POOL_TIMEOUT_S = 5.0
# Pages a client gets when it does not ask; max_page_size still caps what it may ask.
DEFAULT_PAGE_SIZE = 100
# A JSON body is a device, a rule or a user: kilobytes. 1 MiB holds the largest rule
# and refuses (413) a client streaming a file to the wrong route. The CSV import
# has its own, larger limit.
MAX_BODY_BYTES = 1024 * 1024


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_pool(request: Request) -> Pool:
    return cast(Pool, request.app.state.pool)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def get_clock(request: Request) -> Clock:
    """``app.state.clock`` when a test set one, else the wall clock."""
    return cast(Clock, getattr(request.app.state, "clock", _utc_now))


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[Pool, Depends(get_pool)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def get_conn(pool: PoolDep) -> Iterator[psycopg.Connection[Any]]:
    """One autocommit connection per request (shared by auth and the route).

    Autocommit: every statement here is a read or a single-statement write, so a
    request never holds a transaction open, and nothing commits after the response.

    The auth dependency names the request's user in the session setting ``sc.actor``
    (the audit triggers read it) and ``api.scope.authorize`` the user's communities in
    ``sc.communities`` (the row-level security policies read it); both are cleared
    before the connection goes back, so the next request starts seeing nothing.
    """
    with pool.connection(timeout=POOL_TIMEOUT_S) as conn:
        try:
            yield conn
        finally:
            try:
                conn.execute(
                    "SELECT set_config('sc.actor', '', false),"
                    " set_config('sc.communities', '', false)"
                )
            except psycopg.Error as exc:  # a broken connection: the pool discards it
                _LOG.debug("could not clear the request's settings: %s", exc)


ConnDep = Annotated[psycopg.Connection[Any], Depends(get_conn)]


def page_size(settings: Settings, requested: int | None) -> int:
    """The requested page size, capped at ``settings.api.max_page_size``."""
    wanted = DEFAULT_PAGE_SIZE if requested is None else requested
    return min(wanted, settings.api.max_page_size)
