"""Public models of the dashboard's own routes: building tiles, service figures and a
device's latest values."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas import Public
from core.rules import Severity

__all__ = [
    "BuildingTilePublic",
    "DeviceLatestPublic",
    "FiguresPublic",
    "MetricValuePublic",
    "OverviewPublic",
    "TileCounts",
]


class TileCounts(Public):
    devices: int = Field(description="Registered devices, decommissioned ones excluded")
    online: int
    offline: int = Field(description="Said offline (or its Last Will did), or silent too long")
    never_seen: int = Field(description="Registered, nothing received yet (not commissioned)")
    maintenance: int = Field(description="In maintenance: their alerts are suppressed")
    alerting: int = Field(description="Devices with an open or acknowledged alert")


class BuildingTilePublic(TileCounts):
    id: str | None = Field(description="None: the devices that have no building")
    name: str
    floors: int | None
    registered: bool = Field(
        description="In the registry's buildings; false for a building only devices name"
    )
    by_class: dict[str, TileCounts] = Field(description="The same counts per device class")
    alerts: int = Field(description="Open and acknowledged alerts in the building")
    open_alerts: int = Field(description="Alerts nobody has acknowledged yet")
    worst_severity: Severity | None = Field(description="Of its open and acknowledged alerts")


class OverviewPublic(Public):
    community_id: str
    name: str
    time_zone: str
    at: datetime
    totals: TileCounts
    buildings: list[BuildingTilePublic] = Field(
        description="By building id; the devices without a building last"
    )


class FiguresPublic(Public):
    community_id: str
    time_zone: str
    at: datetime
    day_start: datetime = Field(description="Local midnight in the community's time zone")
    month_start: datetime = Field(description="Local midnight of the month's first day")
    open_alerts: int = Field(description="Alerts nobody has acknowledged yet")
    open_critical: int
    acknowledged_alerts: int = Field(description="Acknowledged, not resolved")
    alerts_today: int = Field(description="Raised since local midnight (suppressed ones aside)")
    alerts_month: int
    ack_median_s_today: float | None = Field(
        description="Median seconds from raised to acknowledged, alerts raised today"
    )
    ack_median_s_month: float | None
    resolve_median_s_today: float | None = Field(
        description="Median seconds from raised to resolved by a person, alerts raised today"
    )
    resolve_median_s_month: float | None
    devices: int
    devices_online: int
    devices_offline: int = Field(description="Said offline or silent too long")
    devices_never_seen: int


class MetricValuePublic(Public):
    metric: str
    unit: str = Field(description="From the metric catalogue; '' for flags and unknown ones")
    value: float
    ts: datetime = Field(description="Device time")
    received_at: datetime


class DeviceLatestPublic(Public):
    device_id: str
    device_class: str
    data: list[MetricValuePublic] = Field(description="Newest value of each metric, by name")
