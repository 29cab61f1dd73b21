"""A community at a glance: its buildings as tiles of devices online, offline and
alerting per class, and the service figures of its control room.

Connectivity is judged as everywhere else (``core.connectivity.judge``: status,
Last Will and silence against each device's interval). "Today" and "this month"
are the community's own: local midnight in its time zone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from api.dashboard.schemas import BuildingTilePublic, FiguresPublic, OverviewPublic, TileCounts
from core.connectivity import Connectivity, judge
from core.fleet import presence_of
from core.rules import SEVERITIES, Severity
from store.devices import community_devices
from store.overview import alert_figures, buildings_of, working_alerts

__all__ = ["community_figures", "community_overview", "local_day_and_month"]

Conn = psycopg.Connection[Any]

_OFFLINE = frozenset({Connectivity.OFFLINE, Connectivity.SILENT})
# store.overview.AlertFigures -> FiguresPublic, where the names differ (the medians keep theirs).
_FIGURE_NAMES = {
    "open": "open_alerts",
    "acknowledged": "acknowledged_alerts",
    "today": "alerts_today",
    "month": "alerts_month",
}


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
        return TileCounts.model_validate(self, from_attributes=True)


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
    registered = buildings_of(conn, community_id)
    alerting: set[str] = set()
    tiles: defaultdict[str | None, _Tile] = defaultdict(_Tile)
    for building_id in registered:
        tiles[building_id] = _Tile()
    for device_id, building, state, severity in working_alerts(conn, community_id):
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


def community_figures(
    conn: Conn, community_id: str, time_zone: str, now: datetime
) -> FiguresPublic:
    day, month = local_day_and_month(now, time_zone)
    alerts = alert_figures(conn, community_id, day, month)
    by_connectivity: defaultdict[Connectivity, int] = defaultdict(int)
    devices = community_devices(conn, community_id)
    for device in devices:
        by_connectivity[judge(presence_of(device), now)] += 1
    figures = {_FIGURE_NAMES.get(k, k): value for k, value in asdict(alerts).items()}
    return FiguresPublic(
        community_id=community_id,
        time_zone=time_zone,
        at=now,
        day_start=day,
        month_start=month,
        **figures,
        devices=len(devices),
        devices_online=by_connectivity[Connectivity.ONLINE],
        devices_offline=sum(by_connectivity[c] for c in _OFFLINE),
        devices_never_seen=by_connectivity[Connectivity.NEVER_SEEN],
    )
