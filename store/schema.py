"""Versioned SQL migrations.

The SQL lives in ``core/migrations/NNNN_name.sql``. ``upgrade`` applies the
missing ones in order, each in its own transaction, under an advisory lock so
that services starting together do not race. Running it twice changes nothing.

A migration whose work depends on the server (TimescaleDB installed or not) has
a Python step, run after its SQL in the same transaction; work that cannot run
in a transaction at all (filling continuous aggregates) runs after the last
migration has committed, still under the lock, and must be safe to repeat.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from store import layout, rollups

__all__ = ["Migration", "applied_versions", "migrations", "upgrade"]

_LOG = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same in every process of the platform.
_LOCK_KEY = 0x5C0_0001
# Python steps by migration version: (the SQL file's) version -> step(conn).
_STEPS: dict[int, Callable[[psycopg.Connection[Any]], None]] = {2: layout.install}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("core.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def _ensure_table(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


def applied_versions(conn: psycopg.Connection[tuple[object, ...]]) -> set[int]:
    _ensure_table(conn)
    return {int(str(row[0])) for row in conn.execute("SELECT version FROM schema_migrations")}


def upgrade(url: str) -> list[Migration]:
    """Apply what is missing; return what was applied."""
    done: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            have = applied_versions(conn)
            for migration in migrations():
                if migration.version in have:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    step = _STEPS.get(migration.version)
                    if step is not None:
                        step(conn)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                _LOG.info("applied migration %04d_%s", migration.version, migration.name)
                done.append(migration)
            rollups.after_upgrade(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done
