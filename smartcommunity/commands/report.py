"""``smartcommunity report --community C --month 2026-11``: a community's service figures."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.service_report import ReportPublic, render_csv, render_html
from core.visits import Month
from smartcommunity.cli_support import connect
from smartcommunity.commands import SubParsers, subcommand
from store.reports import build_report

__all__ = ["register", "render_text"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def render_text(r: ReportPublic) -> str:
    a, d, v = r.alerts, r.devices, r.visits
    lines = [
        f"{r.community_name} ({r.community_id}) — {r.month}, {r.time_zone}",
        f"  alerts raised            {a.total} ({a.suppressed} suppressed)",
    ]
    for cls, counts in a.by_class_severity.items():
        detail = ", ".join(f"{k} {n}" for k, n in counts.items() if n)
        lines.append(f"    {cls:<22} {detail}")
    lines += [
        f"  acknowledged / resolved  {a.acknowledged} / {a.resolved}",
        f"  time to ack  median/p90  {_s(a.ack_median_s)} / {_s(a.ack_p90_s)}",
        f"  time to resolve med/p90  {_s(a.resolve_median_s)} / {_s(a.resolve_p90_s)}",
        f"  acked within 3 min       {_pct(a.ack_within_target_share)} of all;"
        f" {_pct(a.fire_ack_within_target_share)} of {a.fire_alerts} fire alerts",
        f"  devices online           {d.online} of {d.total} ({_pct(d.online_share)})",
        f"  visit rate               {v.visited} of {v.residents} ({_pct(v.visit_rate)})",
        f"  policy met               {v.policy_met} ({_pct(v.policy_met_rate)})",
        f"  due / overdue / missed   {v.due} / {v.overdue} / {v.missed}",
        f"  visits / not at home     {v.visits_recorded} / {v.not_at_home}",
        f"  follow-ups opened / open {v.follow_ups_opened} / {v.follow_ups_open}",
        f"  incidents                {r.incidents.total} {r.incidents.by_type or ''}",
        f"  time to arrive  med/p90  {_s(r.incidents.arrive.median_s)}"
        f" / {_s(r.incidents.arrive.p90_s)}",
        f"  arrived within target    {_pct(r.incidents.arrival_within_target_share)};"
        f" escalations {r.incidents.escalations}",
    ]
    return "\n".join(lines) + "\n"


def _report(args: argparse.Namespace) -> int:
    try:
        month = Month.parse(args.month)
    except ValueError as exc:
        print(f"smartcommunity: {exc}", file=sys.stderr)
        return 2
    now = datetime.fromisoformat(args.as_of) if args.as_of else datetime.now(UTC)
    with connect() as conn:
        built = build_report(conn, args.community, month, now)
    if built is None:
        print(f"smartcommunity: no community {args.community!r}", file=sys.stderr)
        return 1
    render = {
        "text": render_text,
        "json": lambda r: r.model_dump_json(indent=2) + "\n",
        "csv": render_csv,
        "html": render_html,
    }[args.format]
    text = render(built)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    report = subcommand(commands, "report", _report, help="a community's monthly service figures")
    report.add_argument("--community", required=True)
    report.add_argument("--month", required=True, help="YYYY-MM, in the community's time zone")
    report.add_argument("--format", choices=("text", "json", "csv", "html"), default="text")
    report.add_argument("--output", help="write to this file instead of stdout")
    report.add_argument("--as-of", help="judge visits as of this time (ISO 8601 with zone)")
