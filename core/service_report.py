"""A community's monthly service report: its figures as one model, and the renderings
(CSV rows, a one-page printable HTML page) the API and the CLI share. No I/O: the
figures are read by ``store.reports``.
"""

from __future__ import annotations

import csv
import html
import io
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.incidents import IncidentFigures
from core.projection import project
from core.response_figures import ACK_TARGET_S, Figures
from core.visits import Coverage, Standing

__all__ = [
    "AlertFigures",
    "DeviceFigures",
    "IncidentFiguresPublic",
    "PhasePublic",
    "ReportPublic",
    "VisitCounts",
    "VisitFigures",
    "assemble",
    "flatten",
    "render_csv",
    "render_html",
]

_OUT = ConfigDict(frozen=True)


class AlertFigures(BaseModel):
    model_config = _OUT

    total: int
    suppressed: int
    by_class_severity: dict[str, dict[str, int]]
    acknowledged: int
    resolved: int
    ack_median_s: float | None
    ack_p90_s: float | None
    resolve_median_s: float | None
    resolve_p90_s: float | None
    ack_target_s: float
    ack_within_target_share: float | None
    fire_alerts: int
    fire_ack_within_target_share: float | None


class DeviceFigures(BaseModel):
    model_config = _OUT

    total: int
    online: int
    online_share: float | None


class VisitFigures(BaseModel):
    model_config = _OUT

    residents: int
    visited: int
    visit_rate: float | None
    policy_met: int
    policy_met_rate: float | None
    due: int
    overdue: int
    missed: int
    visits_recorded: int
    not_at_home: int
    follow_ups_opened: int
    follow_ups_open: int


class PhasePublic(BaseModel):
    """Seconds from an incident's opening to a stage."""

    model_config = _OUT

    count: int
    median_s: float | None
    p90_s: float | None


class IncidentFiguresPublic(BaseModel):
    model_config = _OUT

    total: int
    by_type: dict[str, int]
    acknowledge: PhasePublic
    dispatch: PhasePublic
    arrive: PhasePublic
    resolve: PhasePublic
    arrived_within_target: int
    arrival_within_target_share: float | None
    escalations: int


class ReportPublic(BaseModel):
    model_config = _OUT

    community_id: str
    community_name: str
    month: str
    time_zone: str
    generated_at: datetime
    alerts: AlertFigures
    devices: DeviceFigures
    visits: VisitFigures
    incidents: IncidentFiguresPublic


class VisitCounts(BaseModel):
    """The month's visits as recorded (beside the coverage against the policies)."""

    model_config = _OUT

    recorded: int
    not_at_home: int
    follow_ups_opened: int
    follow_ups_open: int


def assemble(
    *,
    community_id: str,
    community_name: str,
    month: str,
    time_zone: str,
    now: datetime,
    fig: Figures,
    devices: tuple[int, int],
    c: Coverage,
    counted: VisitCounts,
    inc: IncidentFigures,
) -> ReportPublic:
    """The report from its figures; ``devices``: (total, online)."""
    total, online = devices
    return ReportPublic(
        community_id=community_id,
        community_name=community_name,
        month=month,
        time_zone=time_zone,
        generated_at=now,
        alerts=project(AlertFigures, fig, total=fig.alerts, ack_target_s=ACK_TARGET_S),
        devices=DeviceFigures(
            total=total, online=online, online_share=online / total if total else None
        ),
        visits=project(
            VisitFigures,
            c,
            counted,
            due=len(c.with_standing(Standing.DUE)),
            overdue=len(c.with_standing(Standing.OVERDUE)),
            missed=len(c.with_standing(Standing.MISSED)),
            visits_recorded=counted.recorded,
        ),
        incidents=project(IncidentFiguresPublic, inc, total=inc.incidents),
    )


def flatten(report: ReportPublic) -> dict[str, str]:
    """``figure -> value`` as the CSV has them: dotted names, '' for none."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out[prefix] = "" if value is None else str(value)

    walk("", report.model_dump(mode="json"))
    return out


def render_csv(report: ReportPublic) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("figure", "value"))
    writer.writerows(flatten(report).items())
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


_CSS = """
body { font: 11pt/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 48em; color: #111; }
h1 { font-size: 16pt; margin-bottom: 0; } .sub { color: #555; margin-top: 0.2em; }
table { border-collapse: collapse; width: 100%; margin: 0.6em 0 1.2em; }
th, td { border-bottom: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
h2 { font-size: 12pt; margin: 1em 0 0.2em; }
@page { size: A4; margin: 15mm; }
@media print { body { margin: 0; max-width: none; font-size: 10pt; } a { color: inherit; } }
"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: ReportPublic) -> str:
    a, d, v = report.alerts, report.devices, report.visits
    severities = ["info", "warning", "minor", "major", "critical"]
    by_class = [
        [cls, *(str(counts.get(s, 0)) for s in severities), str(sum(counts.values()))]
        for cls, counts in a.by_class_severity.items()
    ]
    service = [
        ["Alerts raised", str(a.total)],
        ["Acknowledged / resolved", f"{a.acknowledged} / {a.resolved}"],
        ["Time to acknowledge, median / 90th pct", f"{_dur(a.ack_median_s)} / {_dur(a.ack_p90_s)}"],
        [
            "Time to resolve, median / 90th pct",
            f"{_dur(a.resolve_median_s)} / {_dur(a.resolve_p90_s)}",
        ],
        ["Acknowledged within 3 min (all)", _pct(a.ack_within_target_share)],
        [
            f"Fire alerts acknowledged within 3 min ({a.fire_alerts})",
            _pct(a.fire_ack_within_target_share),
        ],
        ["Devices online", f"{d.online} of {d.total} ({_pct(d.online_share)})"],
    ]
    care = [
        ["Residents in the visit programme", str(v.residents)],
        ["Visited at least once (visit rate)", f"{v.visited} ({_pct(v.visit_rate)})"],
        ["Policy met (weekly visits every week)", f"{v.policy_met} ({_pct(v.policy_met_rate)})"],
        ["Due / overdue / missed", f"{v.due} / {v.overdue} / {v.missed}"],
        ["Visits recorded / not at home", f"{v.visits_recorded} / {v.not_at_home}"],
        [
            "Follow-ups opened this month / still open",
            f"{v.follow_ups_opened} / {v.follow_ups_open}",
        ],
    ]
    i = report.incidents

    def phase(p: PhasePublic) -> str:
        return f"{_dur(p.median_s)} / {_dur(p.p90_s)} ({p.count})"

    response = [
        ["Incidents", str(i.total)],
        *([[f"  {kind}", str(n)] for kind, n in i.by_type.items()]),
        ["Time to acknowledge, median / 90th pct", phase(i.acknowledge)],
        ["Time to dispatch, median / 90th pct", phase(i.dispatch)],
        ["Time to arrive, median / 90th pct", phase(i.arrive)],
        ["Time to resolve, median / 90th pct", phase(i.resolve)],
        [
            "Arrived within target",
            f"{i.arrived_within_target} ({_pct(i.arrival_within_target_share)})",
        ],
        ["Escalations", str(i.escalations)],
    ]
    title = f"{report.community_name} — service report {report.month}"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='sub'>Community {html.escape(report.community_id)} · times in "
        f"{html.escape(report.time_zone)} · generated "
        f"{html.escape(report.generated_at.isoformat())}</p>"
        "<h2>Control room</h2>"
        + _table(["Figure", "Value"], service)
        + "<h2>Alerts by class and severity</h2>"
        + _table(["Class", *severities, "total"], by_class or [["none", *["0"] * 6]])
        + "<h2>Incidents and response (people on site)</h2>"
        + _table(["Figure", "Value"], response)
        + "<h2>Elderly care visits</h2>"
        + _table(["Figure", "Value"], care)
        + "</body></html>"
    )
