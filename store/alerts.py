"""Alerts and their history: every write to ``alerts`` and ``alert_history``, and the
alert channel.

The one place that inserts into ``alert_history`` and sends ``pg_notify`` on the
alert channel: the engine's transaction (``alerts/store.py``) and an operator's
acknowledge or resolve (the API) both go through ``add_history`` and
``notify``, so a history row and its announcement look the same whoever wrote
them. Reading alerts and their history is ``store/alert_reads.py``; maintenance
windows are ``store/maintenance_windows.py``; the engine's progress and what it
reloads, ``store/engine_progress.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from core.rules import AlertState
from store.alert_reads import AlertRecord, find_alert
from store.rows import Conn

__all__ = [
    "ENGINE_ACTOR",
    "NOTIFY_CHANNEL",
    "AlertConflict",
    "acknowledge",
    "add_history",
    "delete_simulated",
    "insert_simulated",
    "listen",
    "notify",
    "resolve",
]

# The channel the engine and the API announce alert transitions on, and the API's
# live stream listens to.
NOTIFY_CHANNEL = "sc_alerts"
# Who the engine's history rows and resolutions name (an auto-resolved alert took no
# one's time).
ENGINE_ACTOR = "engine"
# What an alert announcement carries of the alert (beside action, history id, actor).
_ANNOUNCED = (
    "id",
    "rule_id",
    "subject",
    "community_id",
    "device_id",
    "building",
    "rule_type",
    "severity",
    "state",
    "title",
    "occurrences",
    "group_id",
)


class AlertConflict(Exception):
    """The alert is in a state the asked transition cannot leave."""

    def __init__(self, alert_id: int, state: str, action: str) -> None:
        super().__init__(f"alert {alert_id} is {state}: cannot be {action}")
        self.alert_id = alert_id
        self.state = state
        self.action = action


_HISTORY = (
    "INSERT INTO alert_history (alert_id, action, actor, from_state, to_state, severity, note,"
    " details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)


# -- history and the channel -------------------------------------------------------------


def add_history(
    conn: Conn,
    alert_id: int,
    *,
    action: str,
    actor: str,
    from_state: str | None,
    to_state: str,
    severity: str,
    note: str = "",
    details: Mapping[str, Any] | None = None,
) -> int:
    """One row of an alert's audit trail; return its id (the stream's event id).
    ``details`` must already be JSON that PostgreSQL takes."""
    row = conn.execute(
        _HISTORY,
        (
            alert_id,
            action,
            actor,
            from_state,
            to_state,
            severity,
            note,
            Jsonb(dict(details or {})),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def notify(conn: Conn, payloads: Sequence[str]) -> None:
    """Announce on the alert channel, delivered when the transaction commits."""
    if payloads:
        conn.execute(
            "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
            (NOTIFY_CHANNEL, list(payloads)),
        )


async def listen(conn: psycopg.AsyncConnection[Any], channel: str = NOTIFY_CHANNEL) -> None:
    """Subscribe an (autocommit) connection to the alert channel."""
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


# -- an operator's transitions ------------------------------------------------------------

_Action = Literal["acknowledged", "resolved"]
_SETS: dict[_Action, str] = {
    "acknowledged": "state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s",
    "resolved": "state = 'resolved', resolved_at = now(), resolved_by = %s, resolution_note = %s",
}


def _transition(
    conn: Conn,
    alert_id: int,
    *,
    allowed: tuple[AlertState, ...],
    action: _Action,
    params: tuple[object, ...],
    actor: str,
    note: str,
) -> AlertRecord | None:
    """Change the state, write the history and announce it, in one transaction.
    None if there is no such alert; ``AlertConflict`` if its state does not allow it."""
    with conn.transaction():
        alert = find_alert(conn, alert_id, lock=True)
        if alert is None:
            return None
        if alert.state not in {s.value for s in allowed}:
            raise AlertConflict(alert_id, alert.state, action)
        conn.execute(
            f"UPDATE alerts SET {_SETS[action]}, updated_at = clock_timestamp() WHERE id = %s",  # noqa: S608 - constant columns, values are parameters
            (*params, alert_id),
        )
        after = find_alert(conn, alert_id)
        assert after is not None
        history_id = add_history(
            conn,
            alert_id,
            action=action,
            actor=actor,
            from_state=alert.state,
            to_state=after.state,
            severity=after.severity,
            note=note,
        )
        announced = {name: getattr(after, name) for name in _ANNOUNCED}
        payload = {"action": action, **announced, "history_id": history_id, "actor": actor}
        notify(conn, [json.dumps(payload)])
    return after


def acknowledge(conn: Conn, alert_id: int, *, actor: str, note: str = "") -> AlertRecord | None:
    """Acknowledge an open (or suppressed) alert: escalation stops."""
    return _transition(
        conn,
        alert_id,
        allowed=(AlertState.OPEN, AlertState.SUPPRESSED),
        action="acknowledged",
        params=(actor,),
        actor=actor,
        note=note,
    )


def resolve(conn: Conn, alert_id: int, *, actor: str, note: str) -> AlertRecord | None:
    """Resolve an alert that is not resolved yet, with a note saying why."""
    return _transition(
        conn,
        alert_id,
        allowed=(AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.SUPPRESSED),
        action="resolved",
        params=(actor, note),
        actor=actor,
        note=note,
    )


# -- the engine's statements (alerts/store.py decides; these read and write) --------------

# An alert as the engine handles it: a dict of these keys (times as epoch seconds).
ENGINE_FIELDS = (
    *("id", "rule_id", "subject", "community_id", "device_id", "building", "rule_type"),
    *("severity", "state", "title", "occurrences", "first_seen", "last_seen", "raised_at"),
    *("escalation_level", "group_id", "details"),
)
_ENGINE_COLUMNS = (
    "id, rule_id, subject, community_id, device_id, building, rule_type, severity, state,"
    " title, occurrences, extract(epoch FROM first_seen)::float8,"
    " extract(epoch FROM last_seen)::float8, extract(epoch FROM raised_at)::float8,"
    " escalation_level, group_id, details"
)
EngineAlert = dict[str, Any]


def _engine(values: Sequence[Any] | None) -> EngineAlert | None:
    return None if values is None else dict(zip(ENGINE_FIELDS, values, strict=False))


def _engine_one(values: Sequence[Any] | None) -> EngineAlert:
    found = _engine(values)
    assert found is not None
    return found


_OPEN = f"""
INSERT INTO alerts (rule_id, subject, community_id, device_id, building, rule_type, severity,
                    initial_severity, state, title, details, first_seen, last_seen, raised_at,
                    auto_resolve, escalate_after, escalation_max, notified, occurrences, episode)
VALUES (%(rule_id)s, %(subject)s, %(community_id)s, %(device_id)s, %(building)s, %(rule_type)s,
        %(severity)s, %(severity)s, %(state)s, %(title)s, %(details)s, %(at)s, %(at)s, %(now)s,
        %(auto_resolve)s, make_interval(secs => %(escalate_after)s), %(escalation_max)s,
        %(notified)s, %(occurrences)s, %(at)s)
ON CONFLICT DO NOTHING
RETURNING {_ENGINE_COLUMNS}
"""  # noqa: S608 - constant column list, values are parameters


def open_alert(conn: Conn, values: Mapping[str, Any]) -> EngineAlert | None:
    """Open an alert (``values``: the parameters of the statement, ``details`` JSON that
    PostgreSQL takes). None when one is active for (rule, subject) already, or this
    episode (rule, subject, first seen) was opened before: the database's unique keys."""
    params = {**values, "details": Jsonb(values["details"])}
    return _engine(conn.execute(_OPEN, params).fetchone())


def lock_active(conn: Conn, rule_id: str, subject: str) -> tuple[EngineAlert, bool] | None:
    """The active alert of (rule, subject), locked, and whether it resolves itself."""
    row = conn.execute(
        f"SELECT auto_resolve, {_ENGINE_COLUMNS} FROM alerts"  # noqa: S608 - constant column list
        " WHERE rule_id = %s AND subject = %s AND state <> 'resolved' FOR UPDATE",
        (rule_id, subject),
    ).fetchone()
    return None if row is None else (_engine_one(row[1:]), bool(row[0]))


def repeat(conn: Conn, values: Mapping[str, Any]) -> EngineAlert:
    """The condition again: count it; raise severity, title and details if ``higher``;
    re-open (``reopen``) or unsuppress as the engine decided."""
    params = {**values, "details": Jsonb(values["details"])}
    row = conn.execute(
        "UPDATE alerts SET occurrences = occurrences + %(occurrences)s,"  # noqa: S608 - constant column list
        " last_seen = greatest(last_seen, %(at)s), condition_cleared_at = NULL,"
        " severity = CASE WHEN %(higher)s THEN %(severity)s ELSE severity END,"
        " title = CASE WHEN %(higher)s THEN %(title)s ELSE title END,"
        " details = CASE WHEN %(higher)s OR %(chattering)s THEN details || %(details)s"
        " ELSE details END,"
        " state = CASE WHEN %(reopen)s THEN 'open' ELSE state END,"
        " escalated_at = CASE WHEN %(reopen)s THEN %(now)s ELSE escalated_at END,"
        " notified = notified OR %(unsuppress)s,"
        f" updated_at = clock_timestamp() WHERE id = %(id)s RETURNING {_ENGINE_COLUMNS}",
        params,
    ).fetchone()
    return _engine_one(row)


def clear(conn: Conn, alert_id: int, at: datetime, *, resolve: bool, actor: str) -> EngineAlert:
    """The condition cleared: resolved (``resolve``) or only marked cleared."""
    if resolve:
        return _resolve(conn, alert_id, at, actor, "condition cleared", cleared_at=at)
    row = conn.execute(
        "UPDATE alerts SET condition_cleared_at = %s, updated_at = clock_timestamp()"  # noqa: S608 - constant column list
        f" WHERE id = %s RETURNING {_ENGINE_COLUMNS}",
        (at, alert_id),
    ).fetchone()
    return _engine_one(row)


def resolve_by(conn: Conn, alert_id: int, at: datetime, actor: str, note: str) -> EngineAlert:
    return _resolve(conn, alert_id, at, actor, note, cleared_at=None)


def _resolve(
    conn: Conn, alert_id: int, at: datetime, actor: str, note: str, *, cleared_at: datetime | None
) -> EngineAlert:
    """Resolved at ``at``; ``cleared_at``: when the condition cleared (None: unchanged)."""
    row = conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = %s, resolved_by = %s,"  # noqa: S608 - constant column list
        " resolution_note = %s,"
        " condition_cleared_at = coalesce(%s::timestamptz, condition_cleared_at),"
        f" updated_at = clock_timestamp() WHERE id = %s RETURNING {_ENGINE_COLUMNS}",
        (at, actor, note, cleared_at, alert_id),
    ).fetchone()
    return _engine_one(row)


def raised_since(conn: Conn, community_id: str, since: datetime, flood_rule: str) -> int:
    """Alerts the flood control counts: raised since, not suppressed, not critical."""
    row = conn.execute(
        "SELECT count(*) FROM alerts WHERE community_id = %s AND raised_at > %s"
        " AND rule_id <> %s AND state <> 'suppressed' AND severity <> 'critical'",
        (community_id, since, flood_rule),
    ).fetchone()
    assert row is not None
    return int(row[0])


def group_under(
    conn: Conn, group_id: int, community_id: str, since: datetime, flood_rule: str
) -> set[int]:
    """Put the community's open or acknowledged, non-critical alerts raised since into the
    flood group; return their ids."""
    rows = conn.execute(
        "UPDATE alerts SET group_id = %s, updated_at = clock_timestamp()"
        " WHERE community_id = %s AND raised_at > %s AND rule_id <> %s"
        " AND group_id IS NULL AND state IN ('open', 'acknowledged')"
        " AND severity <> 'critical'"
        " RETURNING id",
        (group_id, community_id, since, flood_rule),
    ).fetchall()
    return {int(r[0]) for r in rows}


def not_notified(conn: Conn, alert_ids: Sequence[int]) -> None:
    conn.execute("UPDATE alerts SET notified = false WHERE id = ANY(%s)", (list(alert_ids),))


def update_flood(
    conn: Conn, alert_id: int, count: int, title: str, details: Mapping[str, Any], at: datetime
) -> None:
    conn.execute(
        "UPDATE alerts SET occurrences = %s, title = %s, details = %s,"
        " last_seen = %s, updated_at = clock_timestamp() WHERE id = %s",
        (count, title, Jsonb(dict(details)), at, alert_id),
    )


def open_flood(
    conn: Conn,
    rule_id: str,
    subject: str,
    community_id: str,
    title: str,
    details: Mapping[str, Any],
    count: int,
    at: datetime,
) -> EngineAlert:
    row = conn.execute(
        "INSERT INTO alerts (rule_id, subject, community_id, rule_type, severity,"  # noqa: S608 - constant column list
        " initial_severity, state, title, details, occurrences, first_seen, last_seen,"
        " raised_at, auto_resolve) VALUES (%s, %s, %s, 'flood', 'major', 'major', 'open',"
        f" %s, %s, %s, %s, %s, %s, true) RETURNING {_ENGINE_COLUMNS}",
        (rule_id, subject, community_id, title, Jsonb(dict(details)), count, at, at, at),
    ).fetchone()
    return _engine_one(row)


def active_of_rule(conn: Conn, rule_id: str) -> list[EngineAlert]:
    """Active alerts of a rule, locked; those another worker holds are skipped."""
    rows = conn.execute(
        f"SELECT {_ENGINE_COLUMNS} FROM alerts WHERE rule_id = %s AND state <> 'resolved'"  # noqa: S608 - constant column list
        " FOR UPDATE SKIP LOCKED",
        (rule_id,),
    ).fetchall()
    return [_engine_one(r) for r in rows]


def due_for_escalation(conn: Conn, now: datetime) -> list[EngineAlert]:
    """Open alerts not acknowledged within their window, locked (others' skipped)."""
    rows = conn.execute(
        f"SELECT {_ENGINE_COLUMNS} FROM alerts WHERE state = 'open'"  # noqa: S608 - constant column list
        " AND escalate_after IS NOT NULL AND escalation_level < escalation_max"
        " AND coalesce(escalated_at, raised_at) + escalate_after <= %s"
        " FOR UPDATE SKIP LOCKED",
        (now,),
    ).fetchall()
    return [_engine_one(r) for r in rows]


def escalate(conn: Conn, alert_id: int, severity: str, at: datetime) -> EngineAlert:
    row = conn.execute(
        "UPDATE alerts SET severity = %s, escalation_level = escalation_level + 1,"  # noqa: S608 - constant column list
        " escalated_at = %s, notified = true, updated_at = clock_timestamp()"
        f" WHERE id = %s RETURNING {_ENGINE_COLUMNS}",
        (severity, at, alert_id),
    ).fetchone()
    return _engine_one(row)


# -- a simulated month (smartcommunity visits simulate) -----------------------------------


def delete_simulated(conn: Conn, community_id: str, start: datetime, end: datetime) -> None:
    """Drop the simulated alerts (rule ids ``sim-...``) raised in ``[start, end)``."""
    conn.execute(
        "DELETE FROM alerts WHERE community_id = %s AND rule_id LIKE 'sim-%%'"
        " AND raised_at >= %s AND raised_at < %s",
        (community_id, start, end),
    )


def insert_simulated(
    conn: Conn,
    *,
    rule_id: str,
    subject: str,
    community_id: str,
    device_id: str,
    severity: str,
    state: str,
    title: str,
    raised_at: datetime,
    acknowledged_at: datetime | None,
    acknowledged_by: str | None,
    resolved_at: datetime | None,
    resolved_by: str | None,
) -> None:
    """An alert as a past month would have left it (no history, no announcement)."""
    conn.execute(
        "INSERT INTO alerts (rule_id, subject, community_id, device_id, rule_type, severity,"
        " initial_severity, state, title, details, first_seen, last_seen, raised_at,"
        " acknowledged_at, acknowledged_by, resolved_at, resolved_by)"
        " VALUES (%s, %s, %s, %s, 'simulated', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            rule_id,
            subject,
            community_id,
            device_id,
            severity,
            severity,
            state,
            title,
            Jsonb({"simulated": True}),
            raised_at,
            raised_at,
            raised_at,
            acknowledged_at,
            acknowledged_by,
            resolved_at,
            resolved_by,
        ),
    )
