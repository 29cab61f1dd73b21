"""Alert rules: the one upsert of ``alert_rules`` (API, CLI and the shipped pack all
go through it), the engine's rule reads and the revision it polls.

A running engine notices a change because every write takes the next value of
``alert_rules_revision``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from core.rules import Rule, dump_rule, parse_rule
from store.rows import Conn, first_record, records
from store.scoping import Communities, scoped

__all__ = [
    "RuleRow",
    "StoredRule",
    "delete_rule",
    "find_rule",
    "forget_state",
    "list_rules",
    "load_rule_rows",
    "load_rules",
    "rules_revision",
    "save_rule",
    "save_state",
    "seed_rules",
    "set_enabled",
    "upsert_rules",
]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A row as stored: the definition unparsed (an old one may no longer validate)."""

    id: str
    definition: dict[str, Any]
    enabled: bool
    source: str
    revision: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RuleRow:
    """A stored rule that validates, parsed."""

    id: str
    rule: Rule
    enabled: bool
    source: str
    revision: int
    updated_at: datetime


_COLUMNS = "id, definition, enabled, source, revision, updated_at"
_UPSERT = (
    "INSERT INTO alert_rules (id, definition, enabled, source) VALUES (%s, %s, %s, %s)"  # noqa: S608 - constant columns, values are parameters
    " ON CONFLICT (id) DO UPDATE SET definition = excluded.definition,"
    " enabled = excluded.enabled, source = excluded.source,"
    " revision = nextval('alert_rules_revision'), updated_at = now()"
    f" RETURNING {_COLUMNS}"
)


def _values(rule: Rule, source: str) -> tuple[object, ...]:
    return (rule.id, Jsonb(dump_rule(rule)), rule.enabled, source)


def save_rule(conn: Conn, rule: Rule, source: str) -> StoredRule:
    """Create or replace one rule."""
    with conn.cursor(row_factory=class_row(StoredRule)) as cur:
        row = cur.execute(_UPSERT, _values(rule, source)).fetchone()
    assert row is not None
    return row


def upsert_rules(conn: Conn, rules: Iterable[Rule], source: str) -> int:
    """Create or replace rules, in one transaction; return how many."""
    rows = [_values(r, source) for r in rules]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)
    return len(rows)


def seed_rules(conn: Conn, rules: Sequence[Rule]) -> int:
    """Install ``rules`` (the default pack) into an empty rule table; return how many.

    Only when there are no rules at all: a rule an operator deleted or changed is
    never brought back behind their back. ``smartcommunity rules apply`` updates.
    """
    with conn.transaction():
        conn.execute("LOCK TABLE alert_rules IN SHARE ROW EXCLUSIVE MODE")
        row = conn.execute("SELECT count(*) FROM alert_rules").fetchone()
        if row is None or row[0]:
            return 0
        with conn.cursor() as cur:
            cur.executemany(_UPSERT, [_values(r, "default") for r in rules])
    return len(rules)


def set_enabled(conn: Conn, rule_id: str, enabled: bool) -> bool:
    """Switch a rule on or off as stored; False if there is no such rule."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE alert_rules SET enabled = %s, revision = nextval('alert_rules_revision'),"
            " updated_at = now() WHERE id = %s",
            (enabled, rule_id),
        )
        return cur.rowcount == 1


def delete_rule(conn: Conn, rule_id: str) -> bool:
    """Delete a rule and the engine state kept for it; False if there is no such rule."""
    with conn.transaction():
        if conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule_id,)).rowcount != 1:
            return False
        conn.execute("DELETE FROM alert_rule_state WHERE rule_id = %s", (rule_id,))
    return True


def save_state(
    conn: Conn,
    upserts: Sequence[tuple[str, str, dict[str, Any]]],
    deletes: Sequence[tuple[str, str]],
) -> None:
    """The engine's per-(rule, subject) state that has to outlive a restart: saved or
    dropped (``upserts``' state must be JSON that PostgreSQL takes)."""
    with conn.cursor() as cur:
        if upserts:
            cur.executemany(
                "INSERT INTO alert_rule_state (rule_id, subject, state, updated_at)"
                " VALUES (%s, %s, %s, now()) ON CONFLICT (rule_id, subject)"
                " DO UPDATE SET state = excluded.state, updated_at = now()",
                [(r, s, Jsonb(d)) for r, s, d in upserts],
            )
        if deletes:
            cur.executemany(
                "DELETE FROM alert_rule_state WHERE rule_id = %s AND subject = %s", deletes
            )


def forget_state(conn: Conn, rule_ids: Sequence[str]) -> None:
    """Drop the engine state saved for rules that changed (it no longer applies)."""
    conn.execute("DELETE FROM alert_rule_state WHERE rule_id = ANY(%s)", (list(rule_ids),))


def find_rule(conn: Conn, rule_id: str) -> StoredRule | None:
    return first_record(
        conn,
        StoredRule,
        f"SELECT {_COLUMNS} FROM alert_rules WHERE id = %s",  # noqa: S608 - constant columns
        (rule_id,),
    )


def list_rules(
    conn: Conn,
    communities: Communities = None,
    *,
    rule_type: str | None = None,
    enabled: bool | None = None,
) -> list[StoredRule]:
    """Rules by id: those scoped to ``communities`` and those for every community."""
    where, params = scoped(
        communities,
        (("definition->>'type' = %s", rule_type), ("enabled = %s", enabled)),
        "definition->'scope'->>'community'",
        everywhere=True,
    )
    query = f"SELECT {_COLUMNS} FROM alert_rules WHERE {' AND '.join(where)} ORDER BY id"  # noqa: S608 - fixed fragments
    return records(conn, StoredRule, query, params)


def load_rule_rows(conn: Conn, rule_id: str | None = None) -> list[RuleRow]:
    """Stored rules parsed; one that no longer validates is logged and skipped."""
    if rule_id is not None:
        found = find_rule(conn, rule_id)
        stored = [] if found is None else [found]
    else:
        stored = list_rules(conn)
    rows = []
    for row in stored:
        try:
            rule = parse_rule({**row.definition, "enabled": row.enabled})
        except ValidationError as exc:
            # A rule stored by an older version that no longer validates: skip, say so.
            _LOG.error("rule %s is invalid and is skipped: %s", row.id, exc)
            continue
        rows.append(RuleRow(row.id, rule, row.enabled, row.source, row.revision, row.updated_at))
    return rows


def load_rules(conn: Conn) -> list[Rule]:
    return [row.rule for row in load_rule_rows(conn)]


def rules_revision(conn: Conn) -> tuple[int, int]:
    """Changes whenever a rule is added, changed, enabled, disabled or deleted."""
    row = conn.execute("SELECT coalesce(max(revision), 0), count(*) FROM alert_rules").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
