"""A community at a glance: its buildings as tiles of devices online, offline and
alerting per class, and the service figures of its control room.

Connectivity is judged as everywhere else (``core.connectivity.judge``: status,
Last Will and silence against each device's interval). "Today" and "this month"
are the community's own: local midnight in its time zone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from api.dashboard.schemas import BuildingTilePublic, FiguresPublic, OverviewPublic, TileCounts
from core.connectivity import Connectivity, judge
from core.fleet import presence_of
from core.rules import SEVERITIES, Severity
from store.devices import community_devices

__all__ = ["community_figures", "community_overview", "local_day_and_month"]

Conn = psycopg.Connection[Any]

# The engine's name in alerts.resolved_by (alerts.store.ACTOR; api does not import
# alerts): an auto-resolved alert took no one's time.
ENGINE_ACTOR = "engine"
_OFFLINE = frozenset({Connectivity.OFFLINE, Connectivity.SILENT})
# Open and acknowledged alerts are someone's work; suppressed ones (maintenance) are not.
_WORKING = ("open", "acknowledged")


@dataclass(slots=True)
class _Counts:
    devices: int = 0
    online: int = 0
    offline: int = 0
    never_seen: int = 0
    maintenance: int = 0
    alerting: int = 0

    def add(self, connectivity: Connectivity, *, maintenance: bool, alerting: bool) -> None:
        self.devices += 1
        self.online += connectivity is Connectivity.ONLINE
        self.offline += connectivity in _OFFLINE
        self.never_seen += connectivity is Connectivity.NEVER_SEEN
        self.maintenance += maintenance
        self.alerting += alerting

    def public(self) -> TileCounts:
        return TileCounts(
            devices=self.devices,
            online=self.online,
            offline=self.offline,
            never_seen=self.never_seen,
            maintenance=self.maintenance,
            alerting=self.alerting,
        )


@dataclass(slots=True)
class _Tile:
    counts: _Counts = field(default_factory=_Counts)
    by_class: defaultdict[str, _Counts] = field(default_factory=lambda: defaultdict(_Counts))
    alerts: int = 0
    open_alerts: int = 0
    worst: int = -1


def community_overview(
    conn: Conn, community_id: str, name: str, time_zone: str, now: datetime
) -> OverviewPublic:
    """Tiles of the registry's buildings and of any building only devices name, then the
    devices without a building (only if there are any)."""
    registered = {
        r[0]: (str(r[1]), r[2])
        for r in conn.execute(
            "SELECT id, name, floors FROM buildings WHERE community_id = %s", (community_id,)
        )
    }
    alerting: set[str] = set()
    tiles: defaultdict[str | None, _Tile] = defaultdict(_Tile)
    for building_id in registered:
        tiles[building_id] = _Tile()
    alerts = conn.execute(
        "SELECT a.device_id, coalesce(a.building, d.building), a.state, a.severity"
        " FROM alerts AS a LEFT JOIN devices AS d ON d.id = a.device_id"
        " WHERE a.community_id = %s AND a.state = ANY(%s)",
        (community_id, list(_WORKING)),
    ).fetchall()
    for device_id, building, state, severity in alerts:
        if device_id is not None:
            alerting.add(device_id)
        tile = tiles[building]
        tile.alerts += 1
        tile.open_alerts += state == "open"
        tile.worst = max(tile.worst, SEVERITIES.index(Severity(severity)))
    totals = _Counts()
    for device in community_devices(conn, community_id):
        connectivity = judge(presence_of(device), now)
        flags = {"maintenance": device.state == "maintenance", "alerting": device.id in alerting}
        tile = tiles[device.building]
        tile.counts.add(connectivity, **flags)
        tile.by_class[device.device_class].add(connectivity, **flags)
        totals.add(connectivity, **flags)
    placed = sorted(b for b in tiles if b is not None)
    order: list[str | None] = [*placed, *([None] if None in tiles else [])]
    return OverviewPublic(
        community_id=community_id,
        name=name,
        time_zone=time_zone,
        at=now,
        totals=totals.public(),
        buildings=[_tile_public(b, tiles[b], registered.get(b) if b else None) for b in order],
    )


def _tile_public(
    building_id: str | None, tile: _Tile, registry: tuple[str, int | None] | None
) -> BuildingTilePublic:
    name, floors = registry if registry is not None else ("", None)
    counts = tile.counts.public()
    return BuildingTilePublic(
        **counts.model_dump(),
        id=building_id,
        name=name or (building_id or ""),
        floors=floors,
        registered=registry is not None,
        by_class={cls: c.public() for cls, c in sorted(tile.by_class.items())},
        alerts=tile.alerts,
        open_alerts=tile.open_alerts,
        worst_severity=SEVERITIES[tile.worst] if tile.worst >= 0 else None,
    )


def local_day_and_month(now: datetime, time_zone: str) -> tuple[datetime, datetime]:
    """Local midnight of today and of the month's first day, in ``time_zone``."""
    zone = ZoneInfo(time_zone)
    local = now.astimezone(zone)
    day = datetime(local.year, local.month, local.day, tzinfo=zone)
    month = datetime(local.year, local.month, 1, tzinfo=zone)
    return day, month


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


def community_figures(
    conn: Conn, community_id: str, time_zone: str, now: datetime
) -> FiguresPublic:
    day, month = local_day_and_month(now, time_zone)
    row = conn.execute(
        _ALERT_FIGURES,
        {"community": community_id, "day": day, "month": month, "engine": ENGINE_ACTOR},
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    by_connectivity: defaultdict[Connectivity, int] = defaultdict(int)
    devices = community_devices(conn, community_id)
    for device in devices:
        by_connectivity[judge(presence_of(device), now)] += 1
    return FiguresPublic(
        community_id=community_id,
        time_zone=time_zone,
        at=now,
        day_start=day,
        month_start=month,
        open_alerts=row[0],
        open_critical=row[1],
        acknowledged_alerts=row[2],
        alerts_today=row[3],
        alerts_month=row[4],
        ack_median_s_today=row[5],
        ack_median_s_month=row[6],
        resolve_median_s_today=row[7],
        resolve_median_s_month=row[8],
        devices=len(devices),
        devices_online=by_connectivity[Connectivity.ONLINE],
        devices_offline=sum(by_connectivity[c] for c in _OFFLINE),
        devices_never_seen=by_connectivity[Connectivity.NEVER_SEEN],
    )
