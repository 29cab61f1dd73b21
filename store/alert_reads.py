"""Alerts and their history as the API and the CLI read them.

Records are plain dataclasses; the API turns them into its response models. What
writes ``alerts`` and ``alert_history`` is ``store/alerts.py``; ``missed_events``
rebuilds, from the history it wrote, the announcements a reconnecting client missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.rules import SEVERITIES, Severity
from store.rows import Conn, first_record, records
from store.scoping import Communities, scoped

__all__ = [
    "AlertRecord",
    "HistoryRecord",
    "find_alert",
    "group_members",
    "history_of",
    "list_alerts",
    "missed_events",
]


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    rule_id: str
    subject: str
    community_id: str
    device_id: str | None
    building: str | None
    rule_type: str
    severity: str
    initial_severity: str
    state: str
    title: str
    details: dict[str, Any]
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    raised_at: datetime
    condition_cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    escalation_level: int
    group_id: int | None


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    id: int
    at: datetime
    action: str
    actor: str
    from_state: str | None
    to_state: str
    severity: str
    note: str
    details: dict[str, Any]


_COLUMNS = (
    "id, rule_id, subject, community_id, device_id, building, rule_type, severity,"
    " initial_severity, state, title, details, occurrences, first_seen, last_seen, raised_at,"
    " condition_cleared_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by,"
    " resolution_note, escalation_level, group_id"
)


def find_alert(conn: Conn, alert_id: int, *, lock: bool = False) -> AlertRecord | None:
    query = f"SELECT {_COLUMNS} FROM alerts WHERE id = %s" + (" FOR UPDATE" if lock else "")  # noqa: S608 - constant columns
    return first_record(conn, AlertRecord, query, (alert_id,))


def history_of(conn: Conn, alert_id: int) -> list[HistoryRecord]:
    return records(
        conn,
        HistoryRecord,
        "SELECT id, at, action, actor, from_state, to_state, severity, note, details"
        " FROM alert_history WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )


def group_members(conn: Conn, alert_id: int) -> list[int]:
    """Alerts grouped under ``alert_id`` (flood control)."""
    rows = conn.execute(
        "SELECT id FROM alerts WHERE group_id = %s ORDER BY id", (alert_id,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def list_alerts(
    conn: Conn,
    communities: Communities,
    *,
    limit: int,
    states: Sequence[str] = (),
    severities: Sequence[str] = (),
    min_severity: Severity | None = None,
    community_id: str | None = None,
    device_id: str | None = None,
    rule_id: str | None = None,
    active: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, int] | None = None,
) -> list[AlertRecord]:
    """Alerts newest first (raised_at, id), at most ``limit``; ``before`` is the
    (raised_at, id) of the last one of the previous page."""
    floor = None if min_severity is None else SEVERITIES[SEVERITIES.index(min_severity) :]
    where, params = scoped(
        communities,
        (
            ("state = ANY(%s)", list(states) or None),
            ("severity = ANY(%s)", list(severities) or None),
            ("severity = ANY(%s)", None if floor is None else [s.value for s in floor]),
            ("community_id = %s", community_id),
            ("device_id = %s", device_id),
            ("rule_id = %s", rule_id),
            ("raised_at >= %s", since),
            ("raised_at < %s", until),
        ),
    )
    if active is not None:
        where.append("state <> 'resolved'" if active else "state = 'resolved'")
    if before is not None:
        where.append("(raised_at, id) < (%s, %s)")
        params += list(before)
    query = (
        f"SELECT {_COLUMNS} FROM alerts WHERE {' AND '.join(where)}"  # noqa: S608 - fixed fragments
        " ORDER BY raised_at DESC, id DESC LIMIT %s"
    )
    return records(conn, AlertRecord, query, [*params, limit])


_MISSED = """
SELECT h.id, h.action, h.actor, h.at, a.id, a.rule_id, a.subject, a.community_id, a.device_id,
       a.building, a.rule_type, h.severity, h.to_state, a.title, a.occurrences, a.group_id
  FROM alert_history AS h JOIN alerts AS a ON a.id = h.alert_id
 WHERE h.id > %s ORDER BY h.id LIMIT %s
"""


def missed_events(conn: Conn, after: int, limit: int) -> list[dict[str, Any]]:
    """Announcements after history id ``after`` as the stream sent them, rebuilt from
    the history (for a client that reconnects), oldest first."""
    rows = conn.execute(_MISSED, (after, limit)).fetchall()
    return [
        {
            "history_id": row[0],
            "action": row[1],
            "actor": row[2],
            "at": row[3].astimezone(UTC).isoformat(),
            "id": row[4],
            "rule_id": row[5],
            "subject": row[6],
            "community_id": row[7],
            "device_id": row[8],
            "building": row[9],
            "rule_type": row[10],
            "severity": row[11],
            "state": row[12],
            "title": row[13],
            "occurrences": row[14],
            "group_id": row[15],
            "replayed": True,
        }
        for row in rows
    ]
