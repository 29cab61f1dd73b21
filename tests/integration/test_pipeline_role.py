"""The pipeline's own database role (migration 0008, docs/security.md): it writes what
ingest and alerting write, and cannot read users or tokens, change the registry or the
schema, or reach a partition past its parent. That the pipeline works under it is what
every pipeline and alerting test shows, since they run with the default role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from core.settings import IngestSettings
from store.conninfo import as_role
from store.schema import upgrade
from store.visits import IMPORT_CHECKINS
from tests.integration.support import one_row

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def owner(database_url: str) -> Iterator[Conn]:
    upgrade(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pipeline(database_url: str, owner: Conn) -> Iterator[Conn]:
    url = as_role(database_url, IngestSettings().database_role)
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def device(owner: Conn) -> str:
    community, device = f"pr-{uuid.uuid4().hex[:8]}", f"pr-{uuid.uuid4().hex[:8]}"
    owner.execute("INSERT INTO communities (id, name) VALUES (%s, 'pipeline role')", (community,))
    owner.execute(
        "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'fire')",
        (device, community),
    )
    return device


def test_runs_as_its_role_for_good(pipeline: Conn) -> None:
    assert pipeline.execute("SELECT current_user").fetchone() == ("sc_pipeline",)
    pipeline.execute("RESET ROLE")  # the startup option is the session's default role
    assert pipeline.execute("SELECT current_user").fetchone() == ("sc_pipeline",)
    row = pipeline.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row == (False, False)


def test_writes_what_ingest_writes(pipeline: Conn, device: str) -> None:
    now = datetime.now(UTC)
    with pipeline.transaction():
        pipeline.execute(
            "INSERT INTO readings (device_id, metric, ts, value, seq, received_at)"
            " VALUES (%s, 'temperature', %s, 21.5, 1, %s)",
            (device, now, now),
        )
        pipeline.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason, detail)"
            " VALUES (%s, 'community/x/fire/y/telemetry', '', 'bad_json', '')",
            (now,),
        )
        pipeline.execute("UPDATE devices SET last_seen = %s WHERE id = %s", (now, device))
    count = pipeline.execute("SELECT count(*) FROM readings WHERE device_id = %s", (device,))
    assert count.fetchone() == (1,)


def test_imports_visit_checkins_as_the_rule_engine_does(
    owner: Conn, pipeline: Conn, device: str
) -> None:
    """The engine's visit check copies check-in events into ``visits`` (and the
    follow-up trigger updates earlier visits) under the pipeline's role."""
    community = owner.execute("SELECT community_id FROM devices WHERE id = %s", (device,))
    row = community.fetchone()
    assert row is not None
    resident = f"pr-{uuid.uuid4().hex[:8]}"
    owner.execute(
        "INSERT INTO residents (id, community_id, name) VALUES (%s, %s, 'Li')",
        (resident, row[0]),
    )
    now = datetime.now(UTC)
    owner.execute(
        "INSERT INTO device_events (device_id, ts, event, data, received_at)"
        " VALUES (%s, %s, 'visit_checkin', %s, %s)",
        (device, now, f'{{"worker": "w1", "resident": "{resident}"}}', now),
    )
    with pipeline.transaction():
        pipeline.execute(IMPORT_CHECKINS.encode())
    visits = owner.execute("SELECT worker FROM visits WHERE resident_id = %s", (resident,))
    assert visits.fetchall() == [("w1",)]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users",
        "SELECT token_hash FROM api_tokens",
        "SELECT * FROM user_communities",
        "SELECT * FROM mqtt_accounts",
        "SELECT * FROM audit_log",
        "SELECT * FROM schema_migrations",
        "INSERT INTO users (name, role, all_communities) VALUES ('intruder', 'admin', true)",
        "UPDATE api_tokens SET revoked_at = NULL",
        "INSERT INTO communities (id, name) VALUES ('pr-intruder', 'x')",
        "UPDATE devices SET community_id = 'elsewhere'",
        "UPDATE devices SET mqtt_password_hash = ''",
        "DELETE FROM devices",
        "DELETE FROM readings",
        "UPDATE readings SET value = 0",
        "DELETE FROM dead_letters",
        "DELETE FROM alerts",
        "DELETE FROM alert_rules",
        "INSERT INTO webhooks (url) VALUES ('http://127.0.0.1/')",
        "INSERT INTO maintenance_windows (community_id, starts_at, ends_at, reason, created_by)"
        " VALUES ('x', now(), now() + interval '1 hour', 'r', 'p')",
        "CREATE TABLE pr_new (id int)",
        "ALTER TABLE readings ADD COLUMN pr_new int",
    ],
)
def test_cannot_step_outside_its_tables(pipeline: Conn, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        pipeline.execute(statement.encode())


_A_PART = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_inherits AS i
  JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE i.inhparent = 'readings'::regclass LIMIT 1
"""


def test_cannot_reach_a_partition_past_its_parent(owner: Conn, pipeline: Conn, device: str) -> None:
    """A day partition (plain PostgreSQL) or a chunk (TimescaleDB) of readings: rows
    go in through the parent only, and nothing is deleted behind it."""
    now = datetime.now(UTC)
    owner.execute(
        "INSERT INTO readings (device_id, metric, ts, value, seq, received_at)"
        " VALUES (%s, 'temperature', %s, 20, 1, %s)",
        (device, now, now),
    )
    row = one_row(owner, _A_PART)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        pipeline.execute(f"DELETE FROM {row[0]}".encode())
