"""The reads behind a community's monthly service report (``core.service_report``):
alerts with their class, devices online, the visits of the month, incidents."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from core.incidents import incident_figures
from core.response_figures import AlertRecord, figures
from core.service_report import ReportPublic, VisitCounts, assemble
from core.visits import Month
from store.incident_records import incident_records
from store.rows import Conn
from store.visits import community_coverage, import_checkins

__all__ = ["VISIT_RULE_ID", "alert_records", "build_report", "device_counts", "visit_counts"]

# The engine's built-in visit rule (alerts/visit_check.py): its alerts count as class
# "visits".
VISIT_RULE_ID = "visit-overdue"


def alert_records(
    conn: Conn, community_id: str, start: datetime, end: datetime
) -> list[AlertRecord]:
    """Alerts raised in ``[start, end)`` with their class: the device's, the visit rule's,
    the rule's scope, or 'other'."""
    rows = conn.execute(
        "SELECT coalesce(d.device_class,"
        "   CASE WHEN a.rule_id = %s THEN 'visits' END,"
        "   r.definition->'scope'->>'device_class', 'other'),"
        " a.severity, a.raised_at, a.acknowledged_at, a.resolved_at, a.state = 'suppressed'"
        " FROM alerts AS a LEFT JOIN devices AS d ON d.id = a.device_id"
        " LEFT JOIN alert_rules AS r ON r.id = a.rule_id"
        " WHERE a.community_id = %s AND a.raised_at >= %s AND a.raised_at < %s",
        (VISIT_RULE_ID, community_id, start, end),
    ).fetchall()
    return [AlertRecord(*row) for row in rows]


def device_counts(conn: Conn, community_id: str) -> tuple[int, int]:
    """(devices in service, of which online)."""
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE online) FROM devices"
        " WHERE community_id = %s AND state <> 'decommissioned'",
        (community_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def visit_counts(conn: Conn, community_id: str, start: datetime, end: datetime) -> VisitCounts:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE outcome <> 'not_at_home'),"
        " count(*) FILTER (WHERE outcome = 'not_at_home'),"
        " count(*) FILTER (WHERE follow_up_due IS NOT NULL),"
        " (SELECT count(*) FROM visits WHERE community_id = %s AND follow_up_due IS NOT NULL"
        "  AND follow_up_done_at IS NULL)"
        " FROM visits WHERE community_id = %s AND started_at >= %s AND started_at < %s",
        (community_id, community_id, start, end),
    ).fetchone()
    assert row is not None
    return VisitCounts(
        recorded=int(row[0]),
        not_at_home=int(row[1]),
        follow_ups_opened=int(row[2]),
        follow_ups_open=int(row[3]),
    )


def build_report(conn: Conn, community_id: str, month: Month, now: datetime) -> ReportPublic | None:
    """The month's figures for a community as of ``now``; None: no such community."""
    found = conn.execute(
        "SELECT name, time_zone FROM communities WHERE id = %s", (community_id,)
    ).fetchone()
    if found is None:
        return None
    name, time_zone = str(found[0]), str(found[1])
    start, end = month.bounds(ZoneInfo(time_zone))
    fig = figures(alert_records(conn, community_id, start, end))
    devices = device_counts(conn, community_id)
    import_checkins(conn)
    cov = community_coverage(conn, community_id, month, now)
    assert cov is not None
    return assemble(
        community_id=community_id,
        community_name=name,
        month=str(month),
        time_zone=time_zone,
        now=now,
        fig=fig,
        devices=devices,
        c=cov.coverage,
        counted=visit_counts(conn, community_id, start, end),
        inc=incident_figures(incident_records(conn, community_id, start, end), now),
    )
