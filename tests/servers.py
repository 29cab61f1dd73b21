"""Real servers for the tests: the ones CI names in the environment, or embedded ones.

conftest.py turns these into fixtures. Every test database is created with a
unique name and dropped afterwards, so runs never see each other's data, on a
shared server or an embedded one.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg import sql

from api.app import create_app
from core.settings import Settings
from smartcommunity.embedded import EmbeddedBroker, EmbeddedPostgres, free_port

__all__ = [
    "ApiServer",
    "broker_server",
    "check_broker",
    "check_database",
    "database_server",
    "database_url_for",
    "embedded_postgres",
    "running_api",
    "scratch_dir",
    "temporary_database",
    "unique_name",
]

# A server that does not answer within this is down, not slow.
CONNECT_TIMEOUT_S = 5
# The API's start (migrations included) on a loaded machine.
API_START_TIMEOUT_S = 30.0


def unique_name(prefix: str) -> str:
    """A name no other test run uses: prefix plus 12 random hex digits."""
    return f"{prefix}_{secrets.token_hex(6)}"


def database_url_for(server_url: str, dbname: str) -> str:
    """server_url with its database replaced by dbname."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def check_database(url: str, origin: str) -> None:
    """Fail the tests, never skip them, when the database server does not answer."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("select 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL from {origin} ({url}) is unreachable: {exc}", pytrace=False)


def check_broker(url: str, origin: str) -> None:
    """Fail the tests, never skip them, when the broker does not accept connections."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 1883)
    try:
        with socket.create_connection(address, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        pytest.fail(f"MQTT broker from {origin} ({url}) is unreachable: {exc}", pytrace=False)


@contextmanager
def temporary_database(server_url: str, prefix: str = "sc_test") -> Iterator[str]:
    """Create an empty database with a unique name, yield its URL, drop it."""
    name = unique_name(prefix)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url_for(server_url, name)
    finally:
        # FORCE: a pool or a pipeline a test left open must not keep it alive.
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A new folder under the system temp dir, deleted afterwards."""
    # Not pytest's tmp_path: run as root, PostgreSQL runs as nobody and needs
    # to traverse every parent, while pytest resets /tmp/pytest-of-root to
    # 0700 whenever another session starts.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A started EmbeddedPostgres in a scratch folder, stopped and deleted afterwards."""
    with scratch_dir("sc-test-pg-") as root, EmbeddedPostgres(data_dir=root / "postgres") as pg:
        yield pg


@contextmanager
def database_server(url_from_env: str | None) -> Iterator[str]:
    """The admin URL of the server named by the environment, or of an embedded one."""
    if url_from_env:
        check_database(url_from_env, "SC_TEST_DATABASE_URL")
        yield url_from_env
        return
    with embedded_postgres() as pg:
        yield pg.url


@contextmanager
def broker_server(url_from_env: str | None, data_dir: Path) -> Iterator[str]:
    """The URL of the broker named by the environment, or of an embedded one."""
    if url_from_env:
        check_broker(url_from_env, "SC_TEST_MQTT_URL")
        yield url_from_env
        return
    with EmbeddedBroker(data_dir=data_dir) as broker:
        yield broker.url


class ApiServer:
    """The API in a uvicorn server on a thread of this process, on a fixed port so that
    it can be restarted (a new app each start) under a page or a client that stays."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def database_url(self) -> str:
        assert self.settings.database_url is not None
        return self.settings.database_url

    def start(self) -> None:
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            # An open alert stream must not hold a stop for long.
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while not self._server.started:  # set once the app's start-up has run
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("the API did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(20)
        assert not self._thread.is_alive(), "the API did not stop"
        self._server = self._thread = None


@contextmanager
def running_api(settings: Settings) -> Iterator[ApiServer]:
    """An ``ApiServer`` started for the block and stopped after it."""
    server = ApiServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
