"""The pools every long-lived database user takes its connections from (store.pools):
the role is the service's, a connection the server ended is replaced, and a database
that cannot be reached is ServiceUnavailable and a counted reconnect failure."""

from __future__ import annotations

import socket

import psycopg
import pytest

from core.errors import ServiceUnavailable
from store import schema
from store.conninfo import as_role
from store.pools import DatabasePool, PoolWatch
from tests.integration.support import wait_for

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connections_work_as_the_services_role_and_are_replaced_when_killed(
    fresh_database_url: str, unique_id: str
) -> None:
    schema.upgrade(fresh_database_url)  # creates sc_pipeline (migration 0008)
    name = f"pool-{unique_id}"
    url = as_role(f"{fresh_database_url}?application_name={name}", "sc_pipeline")
    watch = PoolWatch()
    pool = DatabasePool(url, name="test", watch=watch)
    try:
        with pool.connection() as conn:
            first = conn.info.backend_pid
            row = conn.execute("SELECT current_user").fetchone()
        assert row == ("sc_pipeline",)
        with psycopg.connect(fresh_database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # The check finds the idle connection dead; the caller gets a new one, no error.
        with pool.connection() as conn:
            assert conn.info.backend_pid != first
            assert conn.execute("SELECT current_user").fetchone() == ("sc_pipeline",)
        assert watch.connections_lost() == 1
        assert watch.reconnect_failures == 0
    finally:
        pool.close()


def test_an_unreachable_database_is_unavailable_and_a_counted_reconnect_failure() -> None:
    watch = PoolWatch()
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    pool = DatabasePool(url, name="nowhere", watch=watch, reconnect_timeout_s=0.5)
    try:
        pool.open()
        wait_for(lambda: watch.reconnect_failures >= 1, 30, "the pool to give up reconnecting")
        assert watch.last_failure == "nowhere"
        with pytest.raises(ServiceUnavailable, match="nowhere"), pool.connection(timeout=0.5):
            pass
    finally:
        pool.close()
