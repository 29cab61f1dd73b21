"""Connection pools for a process's long-lived database users.

Each long-lived user (the ingest writer, the device directory's reader, the alert
store, the heartbeat) owns one ``DatabasePool``: a psycopg_pool ``ConnectionPool``
that checks a connection before handing it out (``check_connection``: one empty
query) and replaces a broken one in the background. That is the whole of their
reconnect logic; none of them keeps a connection of its own between uses.

An outage is ``ServiceUnavailable`` at acquisition (no connection within
``ACQUIRE_TIMEOUT_S``), and the caller's retry loop (the pipeline's
``_retrying``, the listener's backoff) decides what to do, as before: nothing is
dropped because a connection was lost. The role a service works as travels in the
connection string's startup options (``store.conninfo.as_role``), so every
connection the pool makes logs in and then works as that role.

The pool opens on first use, or by ``open()`` when a service starts, and
``close()`` ends its connections and threads; a pool closed is opened again by
the next use (a writer or store may be closed and used again, as before).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from core.errors import ServiceUnavailable
from store.rows import Conn

__all__ = [
    "ACQUIRE_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "RECONNECT_TIMEOUT_S",
    "Conn",
    "DatabasePool",
    "PoolWatch",
    "is_outage",
]

_LOG = logging.getLogger(__name__)
# How long a caller waits for a connection before it hears ServiceUnavailable. A
# waiting caller is handed the pool's new connection the moment it is made, so a
# longer wait only delays the caller's own retry loop (and its supervisor beat).
ACQUIRE_TIMEOUT_S = 5.0
# A connection attempt that has not reached the server within this gives up (the
# same bound the hand-written connects used).
CONNECT_TIMEOUT_S = 5
# The pool retries a failed connection with doubling delays (1, 2, 4, 8 s...) for
# this long, then gives up and calls ``reconnect_failed``; the next request starts
# a fresh attempt at once. Short, so the gap between attempts stays under ~8 s and
# a service is back within seconds of the database (psycopg_pool's 5 minutes would
# let the gap grow past a minute).
RECONNECT_TIMEOUT_S = 10.0


def is_outage(exc: BaseException) -> bool:
    """True for "cannot write to the database now" as opposed to "refused this data".
    A read-only transaction means the connection reached a standby (a failover under
    way, or a URL without ``target_session_attrs=read-write``): retry, never bisect."""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return True
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not isinstance(
        exc, psycopg.errors.DataError
    )


# psycopg_pool's default is three workers; our pools make one connection at a time.
_WORKERS = 1


class PoolWatch:
    """What a process's pools went through, for its metrics: connections found broken
    and replaced, and reconnection attempts given up after ``RECONNECT_TIMEOUT_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: list[DatabasePool] = []
        self.reconnect_failures = 0
        self.last_failure = ""

    def _add(self, pool: DatabasePool) -> None:
        with self._lock:
            self._pools.append(pool)

    def reconnect_failed(self, name: str) -> None:
        with self._lock:
            self.reconnect_failures += 1
            self.last_failure = name

    def gave_up(self, pool: ConnectionPool[Any]) -> None:
        """psycopg_pool's ``reconnect_failed`` for a pool made elsewhere (the API's)."""
        _log_gave_up(pool.name, pool.reconnect_timeout)
        self.reconnect_failed(pool.name)

    def connections_lost(self) -> int:
        """Pooled connections found broken (at the check or when returned), all pools."""
        with self._lock:
            pools = list(self._pools)
        return sum(p.connections_lost for p in pools)


class DatabasePool:
    """A ``ConnectionPool`` over ``url``, opened on first use and closed by ``close()``.

    ``configure`` runs once on each new connection (session settings, temporary
    tables) and must leave it idle. ``autocommit`` is the connections' mode.
    ``max_size`` is 1 for a user that works on one thread at a time: with room to
    grow, a request made while the first connection is still being made opens a
    second, and the two then take turns (twice the sessions, staging tables and
    prepared statements for the same work).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        min_size: int = 1,
        max_size: int = 1,
        configure: Callable[[Conn], None] | None = None,
        autocommit: bool = False,
        watch: PoolWatch | None = None,
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.reconnect_timeout_s = reconnect_timeout_s
        self.name = name
        self.min_size = min_size
        self.max_size = max_size
        self.configure = configure
        self.autocommit = autocommit
        self.watch = watch
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Conn] | None = None
        self._lost = 0  # of pools closed before this one
        if watch is not None:
            watch._add(self)

    def open(self) -> None:
        """Start making connections; returns at once (the database may be down)."""
        with self._lock:
            if self._pool is not None:
                return
            pool: ConnectionPool[Conn] = ConnectionPool(
                self.url,
                open=False,
                name=self.name,
                min_size=self.min_size,
                max_size=self.max_size,
                kwargs={"autocommit": self.autocommit, "connect_timeout": CONNECT_TIMEOUT_S},
                configure=self.configure,
                check=ConnectionPool.check_connection,
                timeout=ACQUIRE_TIMEOUT_S,
                reconnect_timeout=self.reconnect_timeout_s,
                reconnect_failed=self._reconnect_failed,
                num_workers=_WORKERS,
            )
            pool.open(wait=False)
            self._pool = pool

    def close(self) -> None:
        """End the connections and the pool's threads; the next use opens it again."""
        with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                self._lost += _lost(pool)
        if pool is not None:
            pool.close()

    @property
    def connections_lost(self) -> int:
        with self._lock:
            return self._lost + (_lost(self._pool) if self._pool is not None else 0)

    @contextmanager
    def connection(self, timeout: float = ACQUIRE_TIMEOUT_S) -> Iterator[Conn]:
        """A checked connection; ``ServiceUnavailable`` when none comes within ``timeout``.

        Errors raised by the caller's work pass through unchanged: telling an outage
        from a refusal is the caller's business. A connection left broken or in a
        transaction is the pool's to roll back or replace."""
        with self._lock:
            pool = self._pool
        if pool is None:
            self.open()
            with self._lock:
                pool = self._pool
            assert pool is not None
        try:
            conn = pool.getconn(timeout)
        except psycopg.OperationalError as exc:  # PoolTimeout, PoolClosed
            raise ServiceUnavailable("database", f"{self.name}: {exc}".strip()) from exc
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def _reconnect_failed(self, pool: ConnectionPool[Conn]) -> None:
        _log_gave_up(self.name, self.reconnect_timeout_s)
        if self.watch is not None:
            self.watch.reconnect_failed(self.name)


def _log_gave_up(name: str, after_s: float) -> None:
    _LOG.error(
        "database pool %s: no connection for %.0f s; trying again on the next request",
        name,
        after_s,
    )


def _lost(pool: ConnectionPool[Conn]) -> int:
    stats = pool.get_stats()
    return int(stats.get("connections_lost", 0)) + int(stats.get("returns_bad", 0))
