"""Request dependencies: the settings, a pooled database connection, the page size.

Routes are plain ``def``: FastAPI runs them (and these dependencies) in its
threadpool, so the blocking psycopg calls never sit inside the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, cast

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from core.settings import Settings

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "POOL_TIMEOUT_S",
    "ConnDep",
    "Pool",
    "PoolDep",
    "SettingsDep",
    "get_conn",
    "page_size",
]

Pool = ConnectionPool[psycopg.Connection[Any]]

# A request that cannot get a connection in 5 s gets a 503 instead of waiting on.
POOL_TIMEOUT_S = 5.0
# Pages a client gets when it does not ask; max_page_size still caps what it may ask.
DEFAULT_PAGE_SIZE = 100


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_pool(request: Request) -> Pool:
    return cast(Pool, request.app.state.pool)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[Pool, Depends(get_pool)]


def get_conn(pool: PoolDep) -> Iterator[psycopg.Connection[Any]]:
    """One autocommit connection per request (shared by auth and the route).

    Autocommit: every statement here is a read or a single-statement write, so a
    request never holds a transaction open, and nothing commits after the response.
    """
    with pool.connection(timeout=POOL_TIMEOUT_S) as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection[Any], Depends(get_conn)]


def page_size(settings: Settings, requested: int | None) -> int:
    """The requested page size, capped at ``settings.api.max_page_size``."""
    wanted = DEFAULT_PAGE_SIZE if requested is None else requested
    return min(wanted, settings.api.max_page_size)
