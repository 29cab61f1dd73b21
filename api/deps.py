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
from psycopg import pq
from psycopg_pool import ConnectionPool
from starlette.exceptions import HTTPException

from core.settings import Settings
from store.sessions import begin

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
    """One connection and one transaction per request, shared by auth and the route.

    The request's actor (``sc.actor``, read by the audit triggers) and communities
    (``sc.communities``, read by the row-level security policies) are set with
    ``set_config(..., true)``: they belong to this transaction and end with it, however
    the request ends, so no connection back in the pool carries a caller's scope (the
    pool's reset refuses one that does: ``api.app``).

    The dependency has ``scope="function"``: the transaction ends when the route
    returns, before the response is sent, so a client never sees a success that is
    not stored yet. An HTTP error answer keeps what was written (the audit row of a
    refused attempt); any other exception rolls everything back.
    """
    with pool.connection(timeout=POOL_TIMEOUT_S) as conn:
        begin(conn)
        try:
            yield conn
        except HTTPException:
            _finish(conn)
            raise
        except BaseException:
            _rollback(conn)
            raise
        _finish(conn)


def _finish(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status == pq.TransactionStatus.INERROR:
        _rollback(conn)
    else:
        conn.commit()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.rollback()
    except psycopg.Error as exc:  # a broken connection: the pool discards it
        _LOG.debug("could not roll back the request's transaction: %s", exc)


ConnDep = Annotated[psycopg.Connection[Any], Depends(get_conn, scope="function")]


def page_size(settings: Settings, requested: int | None) -> int:
    """The requested page size, capped at ``settings.api.max_page_size``."""
    wanted = DEFAULT_PAGE_SIZE if requested is None else requested
    return min(wanted, settings.api.max_page_size)
