"""What the engine reads from the database: rules, devices, maintenance, saved state.

Plain functions over a psycopg connection, so the CLI and the tests use them too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from core.rules import Rule, dump_rule, parse_rule

__all__ = [
    "MaintenanceWindow",
    "RuleRow",
    "active_alerts",
    "last_seen",
    "links_down",
    "load_maintenance",
    "load_rule_rows",
    "load_rules",
    "load_state",
    "recent_events",
    "recent_readings",
    "replayed_since",
    "replays_end",
    "rules_revision",
    "seed_rules",
    "set_enabled",
    "upsert_rules",
]

_LOG = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class RuleRow:
    id: str
    rule: Rule
    enabled: bool
    source: str
    revision: int
    updated_at: datetime


def _rule_from_row(definition: dict[str, Any], enabled: bool) -> Rule:
    return parse_rule({**definition, "enabled": enabled})


def load_rule_rows(conn: Conn, rule_id: str | None = None) -> list[RuleRow]:
    query = "SELECT id, definition, enabled, source, revision, updated_at FROM alert_rules"
    params: tuple[object, ...] = ()
    if rule_id is not None:
        query += " WHERE id = %s"
        params = (rule_id,)
    rows = []
    for rid, definition, enabled, source, revision, updated_at in conn.execute(
        query + " ORDER BY id", params
    ):
        try:
            rule = _rule_from_row(definition, enabled)
        except ValidationError as exc:
            # A rule stored by an older version that no longer validates: skip, say so.
            _LOG.error("rule %s is invalid and is skipped: %s", rid, exc)
            continue
        rows.append(RuleRow(rid, rule, enabled, source, revision, updated_at))
    return rows


def load_rules(conn: Conn) -> list[Rule]:
    return [row.rule for row in load_rule_rows(conn)]


def rules_revision(conn: Conn) -> tuple[int, int]:
    """Changes whenever a rule is added, changed, enabled, disabled or deleted."""
    row = conn.execute("SELECT coalesce(max(revision), 0), count(*) FROM alert_rules").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


_UPSERT = """
INSERT INTO alert_rules (id, definition, enabled, source)
VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE
   SET definition = excluded.definition, enabled = excluded.enabled, source = excluded.source,
       revision = nextval('alert_rules_revision'), updated_at = now()
"""


def upsert_rules(conn: Conn, rules: Iterable[Rule], source: str) -> int:
    """Create or replace rules, in one transaction; return how many."""
    rows = [(r.id, Jsonb(dump_rule(r)), r.enabled, source) for r in rules]
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
            cur.executemany(
                _UPSERT, [(r.id, Jsonb(dump_rule(r)), r.enabled, "default") for r in rules]
            )
    return len(rules)


def set_enabled(conn: Conn, rule_id: str, enabled: bool) -> bool:
    with conn.transaction():
        cur = conn.execute(
            "UPDATE alert_rules SET enabled = %s, revision = nextval('alert_rules_revision'),"
            " updated_at = now() WHERE id = %s",
            (enabled, rule_id),
        )
        return cur.rowcount == 1


def last_seen(conn: Conn) -> dict[str, float]:
    """Each device's newest sign of life (epoch s), read once at start: from then on
    the engine sees every message itself."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, extract(epoch FROM last_seen)::float8 FROM devices"
            " WHERE state <> 'decommissioned' AND last_seen IS NOT NULL"
        ).fetchall()
    return {str(device_id): float(at) for device_id, at in rows}


def links_down(conn: Conn) -> dict[str, float]:
    """Devices whose last status said offline with no data since (a Will), and when:
    a restart must not forget a link lost just before it."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, extract(epoch FROM status_at)::float8 FROM devices"
            " WHERE state = 'active' AND online IS FALSE AND status_at IS NOT NULL"
            " AND (last_received_at IS NULL OR last_received_at < status_at)"
        ).fetchall()
    return {str(device_id): float(at) for device_id, at in rows}


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: int
    community_id: str
    device_id: str | None
    building: str | None
    starts_at: float
    ends_at: float
    reason: str

    def covers(self, community_id: str, device_id: str | None, building: str | None) -> bool:
        if community_id != self.community_id:
            return False
        if self.device_id is not None:
            return device_id == self.device_id
        if self.building is not None:
            return building == self.building
        return True  # the whole community


def load_maintenance(conn: Conn, now: float) -> list[MaintenanceWindow]:
    """Windows that have not ended yet (future ones included)."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, community_id, device_id, building, extract(epoch FROM starts_at)::float8,"
            " extract(epoch FROM ends_at)::float8, reason FROM maintenance_windows"
            " WHERE ends_at > to_timestamp(%s)",
            (now,),
        ).fetchall()
    return [MaintenanceWindow(*row) for row in rows]


def load_state(conn: Conn) -> list[tuple[str, str, dict[str, Any]]]:
    with conn.transaction():
        return [
            (str(r), str(s), dict(d))
            for r, s, d in conn.execute("SELECT rule_id, subject, state FROM alert_rule_state")
        ]


def active_alerts(conn: Conn) -> list[tuple[str, str, float]]:
    """(rule, subject, first seen) of every alert not resolved."""
    with conn.transaction():
        return [
            (str(r), str(s), float(t))
            for r, s, t in conn.execute(
                "SELECT rule_id, subject, extract(epoch FROM first_seen)::float8 FROM alerts"
                " WHERE state <> 'resolved'"
            )
        ]


def recent_readings(
    conn: Conn, device_ids: Sequence[str], metric: str, since: float
) -> list[tuple[str, float, float]]:
    """Stored readings of ``metric`` after ``since`` (primary-key probes per device)."""
    if not device_ids:
        return []
    with conn.transaction():
        return [
            (str(d), float(t), float(v))
            for d, t, v in conn.execute(
                "SELECT device_id, extract(epoch FROM ts)::float8, value FROM readings"
                " WHERE device_id = ANY(%s) AND metric = %s AND ts > to_timestamp(%s)"
                " ORDER BY ts",
                (list(device_ids), metric, since),
            )
        ]


def recent_events(
    conn: Conn, after: datetime, limit: int
) -> list[tuple[str, str, datetime, dict[str, Any], datetime]]:
    """Device events received after ``after`` (replayed on start), oldest first."""
    with conn.transaction():
        return [
            (str(d), str(e), ts, dict(data), received)
            for d, e, ts, data, received in conn.execute(
                "SELECT device_id, event, ts, data, received_at FROM device_events"
                " WHERE received_at > %s ORDER BY received_at LIMIT %s",
                (after, limit),
            )
        ]


def replays_end(conn: Conn) -> int:
    """The newest replay so far (0 for none): where a worker seeing replays first begins."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM dead_letter_replays").fetchone()
    return int(row[0]) if row is not None else 0


def replayed_since(conn: Conn, cursor: int, limit: int) -> list[tuple[int, str, bytes, datetime]]:
    """Dead letters replayed into storage after ``cursor``: (replay id, topic, payload,
    first received), oldest replay first."""
    rows = conn.execute(
        "SELECT r.id, d.topic, d.payload, d.received_at FROM dead_letter_replays AS r"
        " JOIN dead_letters AS d ON d.id = r.dead_letter_id"
        " WHERE r.id > %s AND r.outcome = 'stored' ORDER BY r.id LIMIT %s",
        (cursor, limit),
    ).fetchall()
    return [(int(i), str(t), bytes(p), at) for i, t, p, at in rows]
