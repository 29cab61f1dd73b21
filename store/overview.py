"""The control-room dashboard's reads that no other module makes: a community's name
and zone, its buildings, its alerts being worked on, one pass of alert figures over
the month, and a device's latest values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from store.alerts import ENGINE_ACTOR
from store.rows import Conn

__all__ = [
    "AlertFigures",
    "alert_figures",
    "buildings_of",
    "community_name_zone",
    "latest_values",
    "working_alerts",
]

# Open and acknowledged alerts are someone's work; suppressed ones (maintenance) are not.
WORKING = ("open", "acknowledged")


def community_name_zone(conn: Conn, community_id: str) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT name, time_zone FROM communities WHERE id = %s", (community_id,)
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def buildings_of(conn: Conn, community_id: str) -> dict[str, tuple[str, int | None]]:
    """The registry's buildings of a community: id -> (name, floors)."""
    return {
        str(r[0]): (str(r[1]), r[2])
        for r in conn.execute(
            "SELECT id, name, floors FROM buildings WHERE community_id = %s", (community_id,)
        )
    }


def working_alerts(conn: Conn, community_id: str) -> list[tuple[str | None, str | None, str, str]]:
    """(device, building (the alert's, else its device's), state, severity) of every open
    or acknowledged alert of the community."""
    rows = conn.execute(
        "SELECT a.device_id, coalesce(a.building, d.building), a.state, a.severity"
        " FROM alerts AS a LEFT JOIN devices AS d ON d.id = a.device_id"
        " WHERE a.community_id = %s AND a.state = ANY(%s)",
        (community_id, list(WORKING)),
    ).fetchall()
    return [(d, b, str(s), str(v)) for d, b, s, v in rows]


@dataclass(frozen=True, slots=True)
class AlertFigures:
    open: int
    open_critical: int
    acknowledged: int
    today: int
    month: int
    ack_median_s_today: float | None
    ack_median_s_month: float | None
    resolve_median_s_today: float | None
    resolve_median_s_month: float | None


# One pass over the community's alerts of this month plus whatever is still active
# (the (community_id, raised_at) and active-state indexes find both).
_ALERT_FIGURES = """
SELECT count(*) FILTER (WHERE state = 'open'),
       count(*) FILTER (WHERE state = 'open' AND severity = 'critical'),
       count(*) FILTER (WHERE state = 'acknowledged'),
       count(*) FILTER (WHERE raised_at >= %(day)s AND state <> 'suppressed'),
       count(*) FILTER (WHERE raised_at >= %(month)s AND state <> 'suppressed'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_s) FILTER (WHERE raised_at >= %(day)s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_s) FILTER (WHERE raised_at >= %(month)s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_s)
           FILTER (WHERE raised_at >= %(day)s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_s)
           FILTER (WHERE raised_at >= %(month)s)
  FROM (SELECT state, severity, raised_at,
               -- greatest() skips NULLs: without the CASE an alert nobody acknowledged
               -- would count as acknowledged at once.
               CASE WHEN acknowledged_at IS NOT NULL
                    THEN greatest(0, extract(epoch FROM acknowledged_at - raised_at))::float8
               END AS ack_s,
               CASE WHEN resolved_at IS NOT NULL AND resolved_by <> %(engine)s
                    THEN greatest(0, extract(epoch FROM resolved_at - raised_at))::float8
               END AS resolve_s
          FROM alerts
         WHERE community_id = %(community)s
           AND (raised_at >= %(month)s OR state <> 'resolved')) AS a
"""


def alert_figures(conn: Conn, community_id: str, day: datetime, month: datetime) -> AlertFigures:
    """Alerts open now, raised since ``day`` and since ``month``, and the median times to
    acknowledge and to resolve (by a person: the engine's resolutions took no one's time)."""
    row = conn.execute(
        _ALERT_FIGURES,
        {"community": community_id, "day": day, "month": month, "engine": ENGINE_ACTOR},
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    return AlertFigures(*row)


def latest_values(conn: Conn, device_id: str) -> list[tuple[str, float, datetime, datetime]]:
    """(metric, value, device time, received) of the newest value of each metric."""
    rows = conn.execute(
        "SELECT metric, value, ts, received_at FROM latest WHERE device_id = %s ORDER BY metric",
        (device_id,),
    ).fetchall()
    return [(str(m), float(v), ts, at) for m, v, ts, at in rows]
