"""A request's actor and communities live in its transaction, never on the pooled
connection (docs/security.md, layer 3): however a request ends — normally, with an
HTTP error, with an exception, or abandoned half-way — the next user of the same
backend sees no scope, with or without the pool's reset."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from api.app import create_app, pool_hooks
from api.auth import require_token
from api.deps import get_conn
from api.scope import set_request_scope
from core.access import Role
from core.settings import Settings
from store.accounts import create_token, create_user
from store.schema import upgrade
from tests.integration.support import one_row

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]
_SCOPE = (
    "SELECT coalesce(current_setting('sc.actor', true), ''),"
    " coalesce(current_setting('sc.communities', true), '')"
)


@pytest.fixture(scope="module")
def token(database_url: str) -> str:
    """A token of an operator scoped to one community."""
    upgrade(database_url)
    community = f"rs-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO communities (id, name) VALUES (%s, %s)", (community, "request scope")
        )
        user = create_user(db, f"rs-{uuid.uuid4().hex[:8]}", Role.OPERATOR, [community])
        return create_token(db, "request scope", user_id=user.id)


@contextmanager
def _one_connection(database_url: str, name: str, *, reset: bool) -> Iterator[ConnectionPool[Conn]]:
    """A pool of one connection set up as the API's (and reset as the API's, if ``reset``)."""
    configure, api_reset = pool_hooks("sc_api")
    with ConnectionPool(
        database_url,
        min_size=1,
        max_size=1,
        configure=configure,
        reset=api_reset if reset else None,
        kwargs={"autocommit": True},
        name=name,
    ) as p:
        yield p


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool[Conn]]:
    """One connection, no reset: what a request leaves behind, the next one meets."""
    with _one_connection(database_url, "request-scope", reset=False) as p:
        yield p


def _bearer(token: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


def _start(pool: ConnectionPool[Conn], token: str) -> tuple[Iterator[Conn], int]:
    """A request as the API runs it, up to the route: its connection, the caller's
    actor and communities set by the real dependencies."""
    request = get_conn(pool)
    conn = next(request)
    principal = require_token(conn, _bearer(token))
    set_request_scope(conn, principal)
    actor, communities = conn.execute(_SCOPE).fetchone() or ("", "")
    assert actor == f"user:{principal.user_name}"
    assert communities.startswith('["rs-')
    return request, conn.info.backend_pid


def _next_sees(pool: ConnectionPool[Conn], pid: int) -> tuple[str, str]:
    with pool.connection() as conn:
        assert conn.info.backend_pid == pid  # the very connection the request had
        row = one_row(conn, _SCOPE)
    return row[0], row[1]


def _ends_normally(request: Iterator[Conn]) -> None:
    with pytest.raises(StopIteration):
        next(request)


def _throws(exc: BaseException) -> Callable[[Iterator[Conn]], None]:
    def end(request: Iterator[Conn]) -> None:
        gen: Any = request
        with pytest.raises(type(exc)):
            gen.throw(exc)

    return end


def _abandoned(request: Iterator[Conn]) -> None:
    # A client gone or a task cancelled: the generator is closed half-way.
    gen: Any = request
    gen.close()


@pytest.mark.parametrize(
    "end",
    [
        _ends_normally,
        _throws(HTTPException(404, "not yours")),
        _throws(RuntimeError("the route failed")),
        _abandoned,
    ],
    ids=["normal", "http-error", "exception", "abandoned"],
)
def test_no_scope_survives_the_request(
    pool: ConnectionPool[Conn], token: str, end: Callable[[Iterator[Conn]], None]
) -> None:
    request, pid = _start(pool, token)
    end(request)
    assert _next_sees(pool, pid) == ("", "")


def test_connection_returned_mid_transaction_holds_no_scope(
    pool: ConnectionPool[Conn], token: str
) -> None:
    """A connection handed back to the pool while a request's transaction is still
    open, scope set by the real dependencies: the pool rolls it back, the scope too."""
    conn = pool.getconn()
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    principal = require_token(conn, _bearer(token))
    set_request_scope(conn, principal)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    pool.putconn(conn)
    assert _next_sees(pool, pid) == ("", "")


def test_session_level_scope_would_leak(pool: ConnectionPool[Conn]) -> None:
    """The control: the same pool does carry a session-level value to the next user,
    which is what the requests above no longer set."""
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT set_config('sc.communities', '*', false)")
    assert _next_sees(pool, pid) == ("", "*")
    with pool.connection() as conn:
        conn.execute("SELECT set_config('sc.communities', '', false)")


def test_pool_reset_discards_a_connection_holding_a_scope(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The API pool's reset refuses a connection that came back with a session-level
    scope (the pool then closes it), so it never serves another request."""
    with _one_connection(database_url, "request-scope-reset", reset=True) as p:
        with p.connection() as conn:
            leaked = conn.info.backend_pid
            conn.execute("SELECT set_config('sc.communities', '*', false)")
        with caplog.at_level(logging.WARNING, logger="psycopg.pool"), p.connection() as conn:
            assert conn.info.backend_pid != leaked
            assert conn.execute(_SCOPE).fetchone() == ("", "")
        assert any("still holds a caller's scope" in r.getMessage() for r in caplog.records)


def test_api_requests_leave_no_scope_behind(
    database_url: str, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the real app: a read, a refusal (audited, so committed), a hostile
    input answered 422 and a 401; then every pooled connection is clean and the
    pool's reset never had to discard one."""
    headers = {"Authorization": f"Bearer {token}"}
    with (
        caplog.at_level(logging.WARNING, logger="psycopg.pool"),
        TestClient(create_app(Settings(database_url=database_url))) as client,
    ):
        assert client.get("/api/v1/communities", headers=headers).status_code == 200
        assert client.get("/api/v1/alerts/999999999", headers=headers).status_code == 404
        assert client.get("/api/v1/alerts?limit=x", headers=headers).status_code == 422
        assert client.get("/api/v1/communities").status_code == 401
        pool = client.app.state.pool  # type: ignore[attr-defined]
        held = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
        try:
            for conn in held:
                assert conn.execute(_SCOPE).fetchone() == ("", "")
        finally:
            for conn in held:
                pool.putconn(conn)
    assert not [r for r in caplog.records if "scope" in r.getMessage()]
