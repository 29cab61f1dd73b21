"""``/api/v1/communities/{community_id}/report``: a community's service figures for a month.

Alerts by class and severity, time to acknowledge and to resolve (median, 90th
percentile), the share acknowledged within 3 minutes, devices online, the visit
rate, and incidents: by type, time to acknowledge, dispatch, arrive and resolve,
the share arriving within target, escalations (docs/incidents.md). Counts only, no
names: every role that reads communities may read it, for the communities it is
assigned to. JSON, CSV (``figure,value`` rows) or a
one-page printable HTML page (``format=html``).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response

from api.deps import ClockDep, ConnDep
from api.routes.visits import MonthQuery
from api.scope import Authorized, CommunityId, not_found
from core.service_report import ReportPublic, flatten, render_csv, render_html
from core.visits import Month
from store.reports import build_report

__all__ = [
    "ReportPublic",
    "build_report",
    "flatten",
    "render_csv",
    "render_html",
    "router",
]

router = APIRouter(prefix="/communities", tags=["reports"])


@router.get(
    "/{community_id}/report",
    responses={200: {"content": {"text/csv": {}, "text/html": {}}}},
)
def report(
    conn: ConnDep,
    _p: Authorized,
    clock: ClockDep,
    community_id: CommunityId,
    month: MonthQuery,
    format: Literal["json", "csv", "html"] = "json",
) -> Response:
    """The month's service figures: ``format=json`` (default), ``csv`` or ``html``."""
    built = build_report(conn, community_id, Month.parse(month), clock())
    if built is None:
        raise not_found(f"no community {community_id!r}")
    if format == "csv":
        filename = f"report-{community_id}-{built.month}.csv"
        return Response(
            render_csv(built),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    if format == "html":
        return Response(render_html(built), media_type="text/html; charset=utf-8")
    return Response(built.model_dump_json(), media_type="application/json")
