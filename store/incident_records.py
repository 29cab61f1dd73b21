"""Incidents, the alerts grouped into them and each community's response targets, in
the database; and the views of an incident the API and the CLI show.

The writer of ``incidents``, ``incident_alerts`` and ``incident_targets``. When an
incident opens, moves on or escalates is decided in ``store.incidents`` (with
``core.incidents``); the statements are here. Functions take the time (never the
wall clock) and run inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.incidents import (
    DEFAULT_TARGETS,
    GROUP_WINDOW,
    IncidentRecord,
    IncidentType,
    Progress,
    Stage,
    Targets,
    stronger,
)
from store.dispatch import DispatchView, StepView, dispatch_views, timeline
from store.rows import Conn, scalar
from store.scoping import Communities, scoped

__all__ = [
    "Incident",
    "IncidentView",
    "advance",
    "alert_facts",
    "all_targets",
    "auto_dispatch_candidates",
    "claim_auto_dispatch",
    "claim_target",
    "count_escalation",
    "get_incident",
    "incident_of_alert",
    "incident_records",
    "incident_view",
    "incident_views",
    "link",
    "newly_acknowledged",
    "open_incident",
    "open_incident_for",
    "open_incidents",
    "set_targets",
    "take_alert",
    "targets_for",
    "ungrouped_alerts",
]


# --- targets ------------------------------------------------------------------------------


def targets_for(conn: Conn, community_id: str, incident_type: str) -> Targets:
    row = conn.execute(
        "SELECT ack_s, dispatch_s, accept_s, arrival_s, resolve_s FROM incident_targets"
        " WHERE community_id = %s AND incident_type = %s",
        (community_id, incident_type),
    ).fetchone()
    if row is None:
        return DEFAULT_TARGETS[IncidentType(incident_type)]
    return Targets(*(int(v) for v in row))


def all_targets(conn: Conn, community_id: str) -> dict[IncidentType, tuple[Targets, bool]]:
    """Every incident type's targets in force, and whether the community set them."""
    rows = {
        str(r[0]): Targets(*(int(v) for v in r[1:]))
        for r in conn.execute(
            "SELECT incident_type, ack_s, dispatch_s, accept_s, arrival_s, resolve_s"
            " FROM incident_targets WHERE community_id = %s",
            (community_id,),
        )
    }
    return {
        kind: (rows[kind.value], True) if kind.value in rows else (DEFAULT_TARGETS[kind], False)
        for kind in IncidentType
    }


def set_targets(conn: Conn, community_id: str, incident_type: str, targets: Targets) -> None:
    """Replace one type's targets; open incidents are measured against them at once."""
    conn.execute(
        "INSERT INTO incident_targets (community_id, incident_type, ack_s, dispatch_s, accept_s,"
        " arrival_s, resolve_s) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (community_id, incident_type) DO UPDATE SET ack_s = excluded.ack_s,"
        " dispatch_s = excluded.dispatch_s, accept_s = excluded.accept_s,"
        " arrival_s = excluded.arrival_s, resolve_s = excluded.resolve_s",
        (
            community_id,
            incident_type,
            targets.ack_s,
            targets.dispatch_s,
            targets.accept_s,
            targets.arrival_s,
            targets.resolve_s,
        ),
    )


# --- an incident --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    community_id: str
    building: str | None
    resident_id: str | None
    incident_type: str
    stage: str
    opened_at: datetime
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    accepted_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    escalated: list[str]


_INCIDENT = (
    "SELECT id, community_id, building, resident_id, incident_type, stage, opened_at,"
    " acknowledged_at, dispatched_at, accepted_at, arrived_at, resolved_at, escalated"
    " FROM incidents"
)


def get_incident(conn: Conn, incident_id: int, *, lock: bool = False) -> Incident | None:
    query = _INCIDENT + " WHERE id = %s" + (" FOR UPDATE" if lock else "")
    row = conn.execute(query.encode(), (incident_id,)).fetchone()
    return None if row is None else Incident(*row)


def open_incidents(conn: Conn) -> list[Incident]:
    """Every incident not resolved yet."""
    return [Incident(*r) for r in conn.execute(_INCIDENT + " WHERE resolved_at IS NULL")]


def advance(conn: Conn, incident_id: int, stage: Stage, column: str, at: datetime) -> None:
    """Set a stage's time once, and the stage if it moves forward."""
    order = [s.value for s in Stage]
    conn.execute(
        f"UPDATE incidents SET {column} = coalesce({column}, %s),"  # noqa: S608 - column is a constant of the caller
        " stage = CASE WHEN array_position(%s::text[], stage) < array_position(%s::text[], %s)"
        " THEN %s ELSE stage END WHERE id = %s",
        (at, order, order, stage.value, stage.value, incident_id),
    )


def count_escalation(conn: Conn, incident_id: int) -> int:
    """One more escalation of the incident; how many there have been."""
    bumped = conn.execute(
        "UPDATE incidents SET escalations = escalations + 1 WHERE id = %s RETURNING escalations",
        (incident_id,),
    ).fetchone()
    return int(bumped[0]) if bumped else 1


def claim_target(conn: Conn, incident_id: int, target: str) -> bool:
    """Mark a missed target as escalated; False: another pass escalated it first."""
    claimed = conn.execute(
        "UPDATE incidents SET escalated = array_append(escalated, %s)"
        " WHERE id = %s AND NOT %s = ANY(escalated) RETURNING id",
        (target, incident_id, target),
    ).fetchone()
    return claimed is not None


# --- alerts become incidents --------------------------------------------------------------


def ungrouped_alerts(conn: Conn) -> list[tuple[Any, ...]]:
    """(alert, community, building, rule, severity, title, raised at, device class,
    resident) of active alerts in no incident yet, oldest first, locked (another desk
    skips them)."""
    return conn.execute(
        "SELECT a.id, a.community_id, a.building, a.rule_id, a.severity, a.title,"
        " a.raised_at, d.device_class, d.resident_id FROM alerts AS a"
        " LEFT JOIN devices AS d ON d.id = a.device_id"
        " WHERE a.state IN ('open', 'acknowledged') AND a.group_id IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM incident_alerts AS i WHERE i.alert_id = a.id)"
        " ORDER BY a.raised_at, a.id FOR UPDATE OF a SKIP LOCKED"
    ).fetchall()


def alert_facts(conn: Conn, alert_id: int) -> tuple[Any, ...] | None:
    """(community, building, rule, title, raised at, device class, resident) of an
    alert; None: no such alert."""
    row = conn.execute(
        "SELECT a.community_id, a.building, a.rule_id, a.title, a.raised_at, d.device_class,"
        " d.resident_id FROM alerts AS a LEFT JOIN devices AS d ON d.id = a.device_id"
        " WHERE a.id = %s",
        (alert_id,),
    ).fetchone()
    return None if row is None else tuple(row)


def open_incident(
    conn: Conn,
    community: str,
    building: str | None,
    resident: str | None,
    kind: IncidentType,
    title: str,
    raised: datetime,
) -> int:
    """A new incident (no alert linked yet: ``link``)."""
    row = conn.execute(
        "INSERT INTO incidents (community_id, building, resident_id, incident_type,"
        " title, opened_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (community, building, resident, kind.value, title, raised),
    ).fetchone()
    assert row is not None
    return int(row[0])


def take_alert(conn: Conn, incident_id: int, kind: IncidentType, resident: str | None) -> None:
    """An open incident joined by an alert of ``kind``: its type becomes the stronger of
    the two, its resident the alert's if it had none."""
    conn.execute(
        "UPDATE incidents SET incident_type = %s, resident_id ="
        " coalesce(resident_id, %s) WHERE id = %s",
        (_stronger_type(conn, incident_id, kind).value, resident, incident_id),
    )


def _stronger_type(conn: Conn, incident_id: int, kind: IncidentType) -> IncidentType:
    row = conn.execute(
        "SELECT incident_type FROM incidents WHERE id = %s", (incident_id,)
    ).fetchone()
    return kind if row is None else stronger(IncidentType(row[0]), kind)


def link(conn: Conn, alert_id: int, incident_id: int, community: str) -> None:
    conn.execute(
        "INSERT INTO incident_alerts (alert_id, incident_id, community_id) VALUES (%s, %s, %s)",
        (alert_id, incident_id, community),
    )


def incident_of_alert(conn: Conn, alert_id: int) -> int | None:
    """The incident an alert belongs to, if it has been grouped into one."""
    return scalar(
        conn, int, "SELECT incident_id FROM incident_alerts WHERE alert_id = %s", (alert_id,)
    )


def open_incident_for(
    conn: Conn, community: str, building: str | None, resident: str | None, raised: datetime
) -> int | None:
    """The open incident this alert belongs to: same building (or, without one, the same
    resident), opened within GROUP_WINDOW before it."""
    if building is None and resident is None:
        return None
    return scalar(
        conn,
        int,
        "SELECT id FROM incidents WHERE community_id = %s AND resolved_at IS NULL"
        " AND opened_at >= %s AND ((%s::text IS NOT NULL AND building = %s)"
        "   OR (%s::text IS NULL AND resident_id = %s))"
        " ORDER BY opened_at DESC LIMIT 1",
        (community, raised - GROUP_WINDOW, building, building, building, resident),
    )


def newly_acknowledged(conn: Conn) -> list[tuple[Any, ...]]:
    """(incident, community, when, by whom) of incidents not acknowledged yet one of whose
    alerts an operator acknowledged (the first such acknowledgement)."""
    return conn.execute(
        "SELECT DISTINCT ON (i.id) i.id, i.community_id, a.acknowledged_at,"
        " coalesce(a.acknowledged_by, 'unknown') FROM incidents AS i"
        " JOIN incident_alerts AS l ON l.incident_id = i.id JOIN alerts AS a ON a.id = l.alert_id"
        " WHERE i.acknowledged_at IS NULL AND a.acknowledged_at IS NOT NULL"
        " ORDER BY i.id, a.acknowledged_at"
    ).fetchall()


def auto_dispatch_candidates(conn: Conn) -> list[tuple[Any, ...]]:
    """(incident, rule, severity) of each alert of open incidents not dispatched
    automatically yet."""
    return conn.execute(
        "SELECT i.id, a.rule_id, a.severity FROM incidents AS i"
        " JOIN incident_alerts AS l ON l.incident_id = i.id"
        " JOIN alerts AS a ON a.id = l.alert_id"
        " WHERE i.resolved_at IS NULL AND NOT i.auto_dispatched ORDER BY i.id"
    ).fetchall()


def claim_auto_dispatch(conn: Conn, incident_id: int) -> bool:
    """Claimed once: the desk and an API request may sync at the same moment."""
    claimed = conn.execute(
        "UPDATE incidents SET auto_dispatched = true"
        " WHERE id = %s AND NOT auto_dispatched RETURNING id",
        (incident_id,),
    ).fetchone()
    return claimed is not None


# --- figures ------------------------------------------------------------------------------


def incident_records(
    conn: Conn, community_id: str, start: datetime, end: datetime
) -> list[IncidentRecord]:
    rows = conn.execute(
        "SELECT i.incident_type, i.opened_at, i.acknowledged_at, i.dispatched_at, i.arrived_at,"
        " i.resolved_at, t.arrival_s, i.escalations FROM incidents AS i"
        " LEFT JOIN incident_targets AS t ON t.community_id = i.community_id"
        "  AND t.incident_type = i.incident_type"
        " WHERE i.community_id = %s AND i.opened_at >= %s AND i.opened_at < %s",
        (community_id, start, end),
    ).fetchall()
    return [
        IncidentRecord(
            kind,
            opened,
            ack,
            sent,
            arrived,
            resolved,
            float(target if target is not None else DEFAULT_TARGETS[IncidentType(kind)].arrival_s),
            int(escalations),
        )
        for kind, opened, ack, sent, arrived, resolved, target, escalations in rows
    ]


# --- views (the API's and the CLI's) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentView:
    """An incident with its alerts, dispatches, timeline and the targets in force."""

    id: int
    community_id: str
    building: str | None
    incident_type: str
    title: str
    stage: str
    opened_at: datetime
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    accepted_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    escalations: int
    alert_ids: list[int]
    dispatches: list[DispatchView]
    timeline: list[StepView]
    targets: Targets

    @property
    def progress(self) -> Progress:
        return Progress(
            self.opened_at,
            self.acknowledged_at,
            self.dispatched_at,
            self.arrived_at,
            self.resolved_at,
        )


_VIEW = (
    "SELECT id, community_id, building, incident_type, title, stage, opened_at,"
    " acknowledged_at, dispatched_at, accepted_at, arrived_at, resolved_at, escalations"
    " FROM incidents"
)
_VIEW_FIELDS = (
    *("id", "community_id", "building", "incident_type", "title", "stage", "opened_at"),
    *("acknowledged_at", "dispatched_at", "accepted_at", "arrived_at", "resolved_at"),
    "escalations",
)


def _view(conn: Conn, row: Sequence[Any]) -> IncidentView:
    incident_id = int(row[0])
    alert_ids = [
        int(a)
        for (a,) in conn.execute(
            "SELECT alert_id FROM incident_alerts WHERE incident_id = %s ORDER BY alert_id",
            (incident_id,),
        )
    ]
    dispatches = dispatch_views(conn, incident_id)
    steps = timeline(conn, incident_id)
    targets = targets_for(conn, str(row[1]), str(row[3]))
    base: dict[str, Any] = dict(zip(_VIEW_FIELDS, row, strict=True))
    return IncidentView(
        **base, alert_ids=alert_ids, dispatches=dispatches, timeline=steps, targets=targets
    )


def incident_view(conn: Conn, incident_id: int) -> IncidentView | None:
    row = conn.execute((_VIEW + " WHERE id = %s").encode(), (incident_id,)).fetchone()
    return None if row is None else _view(conn, row)


def incident_views(
    conn: Conn,
    communities: Communities,
    *,
    community_id: str | None = None,
    open_only: bool = False,
    limit: int,
    newest: str = "opened",
) -> list[IncidentView]:
    """Incidents newest first: by opening time (``newest="opened"``) or by id."""
    where, params = scoped(communities, (("community_id = %s", community_id),))
    if open_only:
        where.append("resolved_at IS NULL")
    order = "opened_at DESC, id DESC" if newest == "opened" else "id DESC"
    query = f"{_VIEW} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
    rows = conn.execute(query.encode(), [*params, limit]).fetchall()
    return [_view(conn, r) for r in rows]
