"""Fixtures for real servers: no mocks of the broker or the database.

SC_TEST_DATABASE_URL and SC_TEST_MQTT_URL name running servers (CI sets
them); without them an embedded PostgreSQL and broker are started for the
session. A server that cannot be reached fails the tests, it never skips them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from smartcommunity.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.servers import broker_server, database_server, embedded_postgres, temporary_database
from tests.thread_guard import no_thread_outlives_its_test

# The tests' webhook receivers listen on this machine (docs/security.md: off by default).
os.environ.setdefault("SC_ALERTS__WEBHOOK_PRIVATE_DESTINATIONS", "true")

__all__ = ["no_thread_outlives_its_test"]  # autouse: every test is held to it


@pytest.fixture(scope="session")
def database_server_url() -> Iterator[str]:
    """Admin URL of the session's PostgreSQL server; create databases, never tables, here."""
    with database_server(os.environ.get("SC_TEST_DATABASE_URL")) as url:
        yield url


@pytest.fixture(scope="session")
def database_url(database_server_url: str) -> Iterator[str]:
    """A database of its own for this test session, dropped at its end."""
    with temporary_database(database_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(database_server_url: str) -> Iterator[str]:
    """A database of its own for one test file, dropped after it: for a file whose
    tests change what is global (rules, global webhooks, users) and share set-up.
    Such a file overrides ``database_url`` with it, so that the worker's shared
    database keeps the default rule pack and no global webhook for the files after it."""
    with temporary_database(database_server_url, prefix="sc_module") as url:
        yield url


@pytest.fixture
def fresh_database_url(database_server_url: str) -> Iterator[str]:
    """An empty database for one test, on the same server, dropped afterwards."""
    with temporary_database(database_server_url, prefix="sc_fresh") as url:
        yield url


@pytest.fixture
def cli_database_url(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty database for one test that the CLI's commands use (SC_DATABASE_URL names it)."""
    monkeypatch.setenv("SC_DATABASE_URL", fresh_database_url)
    return fresh_database_url


@pytest.fixture(scope="session")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's broker, shared by tests that use unique topics and client ids."""
    data_dir = tmp_path_factory.mktemp("broker")
    with broker_server(os.environ.get("SC_TEST_MQTT_URL"), data_dir) as url:
        yield url


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A started Mosquitto with the shipped configuration, for tests that restart or kill it.

    The delivery guarantees under test are Mosquitto's (persistence, kept sessions,
    redelivery of unacked messages); the amqtt fallback has none of them, so
    without Mosquitto these tests fail with the reason rather than pass on a lie.
    """
    with EmbeddedBroker(data_dir=tmp_path / "broker") as broker:
        if broker.kind != "mosquitto":
            pytest.fail(
                "this test needs Mosquitto (Debian: apt-get install mosquitto; "
                "`make test` installs it when run as root)",
                pytrace=False,
            )
        yield broker


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A started PostgreSQL of its own, for tests that stop, kill or restart it."""
    with embedded_postgres() as pg:
        yield pg


@pytest.fixture
def unique_id() -> str:
    """A short id no other test uses, valid in topics, device and community ids."""
    return f"t{secrets.token_hex(5)}"


# Property tests: a quick run in the suite, a long one on demand
# (pytest tests/unit/test_decode_properties.py --hypothesis-profile=fuzz).
# No deadline: the machine is shared and timing is not what they test.
settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile("default")
