"""What the control-room dashboard shows that no other route gives: a community's
buildings as tiles, its service figures, and one device's latest values.

- ``/communities/{id}/overview``: per building (and per class in it) devices
  online, offline, never seen, in maintenance and alerting, and its open alerts;
- ``/communities/{id}/figures``: open alerts, alerts today and this month, median
  time to acknowledge and to resolve (today, this month), devices offline; days
  and months in the community's time zone;
- ``/devices/{id}/latest``: the newest value of each of the device's metrics, with
  its unit from the catalogue.

Access is ``api.scope.authorize``'s, as for every ``/api/v1`` route: another
community's id reads as one that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.dashboard.overview import community_figures, community_overview
from api.dashboard.schemas import (
    DeviceLatestPublic,
    FiguresPublic,
    MetricValuePublic,
    OverviewPublic,
)
from api.deps import ClockDep, ConnDep
from api.routes.devices import get_device_or_404
from api.scope import Authorized, CommunityId, DeviceId, not_found
from core.metric_catalog import metric_spec
from store.overview import community_name_zone, latest_values

__all__ = ["router"]

router = APIRouter(tags=["dashboard"])


def _community(conn: ConnDep, community_id: str) -> tuple[str, str]:
    found = community_name_zone(conn, community_id)
    if found is None:
        raise not_found(f"no community {community_id!r}")
    return found


@router.get("/communities/{community_id}/overview")
def overview(
    conn: ConnDep, clock: ClockDep, _p: Authorized, community_id: CommunityId
) -> OverviewPublic:
    """The community's buildings as tiles: devices online, offline, never seen, in
    maintenance and alerting, in total and per device class, and each building's open
    and acknowledged alerts with the worst severity among them."""
    name, time_zone = _community(conn, community_id)
    return community_overview(conn, community_id, name, time_zone, clock())


@router.get("/communities/{community_id}/figures")
def figures(
    conn: ConnDep, clock: ClockDep, _p: Authorized, community_id: CommunityId
) -> FiguresPublic:
    """Service figures of the control room: open alerts, alerts today and this month,
    median time to acknowledge and to resolve (by a person) of the alerts raised today
    and this month, and devices online and offline. Days and months are the
    community's (its time zone)."""
    _, time_zone = _community(conn, community_id)
    return community_figures(conn, community_id, time_zone, clock())


@router.get("/devices/{device_id}/latest")
def device_latest(
    conn: ConnDep, clock: ClockDep, _p: Authorized, device_id: DeviceId
) -> DeviceLatestPublic:
    """The newest value (by device time) of each metric the device has reported."""
    device = get_device_or_404(conn, device_id, clock())
    data = []
    for metric, value, ts, received_at in latest_values(conn, device_id):
        spec = metric_spec(device.device_class, metric)
        data.append(
            MetricValuePublic(
                metric=metric,
                unit=spec.unit if spec is not None else "",
                value=value,
                ts=ts,
                received_at=received_at,
            )
        )
    return DeviceLatestPublic(device_id=device.id, device_class=device.device_class, data=data)
