"""``smartcommunity visits ...``: record visits, set policies, list who is due, rehearse a month."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from core.visits import Month, Outcome, Policy, Standing
from simulators.visits import month_alerts, month_visits, programme
from smartcommunity.cli_support import aware_time, connect, print_table
from smartcommunity.commands import SubParsers, subcommand
from store import alerts as alerts_store
from store import devices as devices_store
from store import places as places_store
from store import residents as residents_store
from store import visits as visits_store
from store.devices import SimulatedDevice

__all__ = ["register", "simulate_month"]

Conn = psycopg.Connection[Any]
# Simulated devices per class, and the share of them online, for the devices figure.
SIM_DEVICES_PER_CLASS = 10
SIM_ONLINE_SHARE = 0.9


def _fail(message: str) -> int:
    print(f"smartcommunity: {message}", file=sys.stderr)
    return 1


def _when(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    return aware_time(text, hint=" (e.g. +08:00 or Z)")


def _record(args: argparse.Namespace) -> int:
    with connect() as conn:
        found = visits_store.resident_community(conn, args.resident)
        if found is None:
            return _fail(f"no resident {args.resident!r}")
        visit = visits_store.record_visit(
            conn,
            found[0],
            found[1],
            resident_id=args.resident,
            worker=args.worker,
            started_at=_when(args.at),
            outcome=Outcome(args.outcome),
            notes=args.notes,
            source="cli",
        )
    due = f", follow-up due {visit.follow_up_due}" if visit.follow_up_due else ""
    print(f"recorded visit {visit.id} to {visit.resident_id} ({visit.outcome}{due})")
    return 0


def _policy(args: argparse.Namespace) -> int:
    with connect() as conn:
        if visits_store.resident_community(conn, args.resident) is None:
            return _fail(f"no resident {args.resident!r}")
        visits_store.set_policy(conn, args.resident, Policy(args.policy))
    print(f"{args.resident}: visit policy {args.policy}")
    return 0


def _deadline(args: argparse.Namespace) -> int:
    with connect() as conn:
        done = visits_store.set_deadline_day(conn, args.community, args.day)
    if not done:
        return _fail(f"no community {args.community!r}")
    print(f"{args.community}: residents not visited by day {args.day} raise an alert")
    return 0


def _due(args: argparse.Namespace) -> int:
    now = _when(args.as_of)
    with connect() as conn:
        visits_store.import_checkins(conn)
        month = Month.parse(args.month) if args.month else None
        found = visits_store.community_coverage(conn, args.community, month, now)
    if found is None:
        return _fail(f"no community {args.community!r}")
    cov = found.coverage
    rate = "-" if cov.visit_rate is None else f"{cov.visit_rate * 100:.1f} %"
    met = "-" if cov.policy_met_rate is None else f"{cov.policy_met_rate * 100:.1f} %"
    local = now.astimezone(ZoneInfo(found.time_zone))
    print(
        f"{found.community_id} {cov.month} as of {local:%Y-%m-%d %H:%M}"
        f" ({found.time_zone}): visited {cov.visited} of {cov.residents} ({rate});"
        f" policy met {cov.policy_met} ({met}); deadline day {found.deadline_day}"
    )
    for title, standing in (
        ("overdue", Standing.OVERDUE),
        ("missed", Standing.MISSED),
        ("due", Standing.DUE),
    ):
        rows = cov.with_standing(standing)
        if not rows or (title == "due" and not args.all):
            if rows:
                print(f"{len(rows)} due (not yet visited, still in time): --all lists them")
            continue
        print(f"\n{title} ({len(rows)}):")
        print_table(
            ("resident", "name", "policy", "visits", "not at home", "last visit"),
            [
                (
                    r.resident_id,
                    found.people[r.resident_id][0],
                    r.policy.value,
                    r.visits,
                    r.attempts,
                    r.last_visit or "",
                )
                for r in rows
            ],
        )
    return 0


def simulate_month(
    conn: Conn,
    community_id: str,
    month: Month,
    *,
    residents: int,
    seed: int = 0,
    miss_share: float = 0.04,
    until: datetime | None = None,
    alerts: bool = True,
) -> tuple[int, int, int]:
    """Write a simulated month: (residents, visits, alerts) written."""
    places_store.ensure_community(conn, community_id, community_id)
    community = places_store.get_community(conn, community_id)
    assert community is not None  # ensured just above
    tz = ZoneInfo(community.time_zone)
    people = programme(community_id, residents, seed)
    with conn.transaction():
        residents_store.enroll_for_visits(
            conn,
            community_id,
            [(p.id, p.name, list(p.vulnerabilities), p.policy.value) for p in people],
        )
        visits_store.delete_simulated(conn, community_id, *month.bounds(tz))
        visits = month_visits(people, month, tz, seed=seed, miss_share=miss_share, until=until)
        for v in visits:
            visits_store.record_visit(conn, community_id, str(tz), **asdict(v), source="simulator")
        written = 0
        if alerts:
            written = _simulate_alerts(conn, community_id, month, tz, seed, until)
    return len(people), len(visits), written


def _simulate_alerts(
    conn: Conn, community_id: str, month: Month, tz: ZoneInfo, seed: int, until: datetime | None
) -> int:
    classes = ("fire", "wearable", "access", "locker")
    devices_store.register_simulated(
        conn,
        [
            SimulatedDevice(
                f"{community_id}-sim-{cls}-{n}",
                community_id,
                cls,
                name=f"simulated {cls} {n}",
                online=n < SIM_DEVICES_PER_CLASS * SIM_ONLINE_SHARE,
            )
            for cls in classes
            for n in range(SIM_DEVICES_PER_CLASS)
        ],
    )
    alerts_store.delete_simulated(conn, community_id, *month.bounds(tz))
    count = 0
    for i, a in enumerate(month_alerts(month, tz, seed=seed)):
        if until is not None and a.raised_at >= until:
            continue
        acked = a.acknowledged_at if until is None or (a.acknowledged_at or until) < until else None
        resolved = (
            a.resolved_at if acked and (until is None or (a.resolved_at or until) < until) else None
        )
        state = "resolved" if resolved else "acknowledged" if acked else "open"
        alerts_store.insert_simulated(
            conn,
            rule_id=f"sim-{a.alert_class}-{a.severity}",
            subject=f"sim:{month}/{i}",
            community_id=community_id,
            device_id=f"{community_id}-sim-{a.alert_class}-{i % SIM_DEVICES_PER_CLASS}",
            severity=a.severity,
            state=state,
            title=f"Simulated {a.alert_class} alert",
            raised_at=a.raised_at,
            acknowledged_at=acked,
            acknowledged_by="user:simulator" if acked else None,
            resolved_at=resolved,
            resolved_by="user:simulator" if resolved else None,
        )
        count += 1
    return count


def _simulate(args: argparse.Namespace) -> int:
    month = Month.parse(args.month)
    until = _when(args.until) if args.until else None
    with connect() as conn:
        found = places_store.get_community(conn, args.community)
        tz = ZoneInfo(found.time_zone if found else "Asia/Shanghai")
        if until is None and Month.of(datetime.now(UTC), tz) == month:
            until = datetime.now(UTC)  # the current month: only what has happened yet
        people, visits, alerts = simulate_month(
            conn,
            args.community,
            month,
            residents=args.residents,
            seed=args.seed,
            miss_share=args.miss_share,
            until=until,
            alerts=not args.no_alerts,
        )
    print(
        f"{args.community} {month}: {people} residents in the programme,"
        f" {visits} visits, {alerts} simulated alerts"
    )
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    visits = commands.add_parser("visits", help="elderly care visits (docs/visits.md)")
    sub = visits.add_subparsers(dest="visits_command", required=True)

    record = subcommand(sub, "record", _record, help="record a visit to a resident")
    record.add_argument("--resident", required=True)
    record.add_argument("--worker", required=True)
    record.add_argument("--outcome", required=True, choices=[o.value for o in Outcome])
    record.add_argument("--at", help="start, ISO 8601 with zone (default: now)")
    record.add_argument("--notes", default="")

    policy = subcommand(sub, "policy", _policy, "resident", help="set a resident's visit policy")
    policy.add_argument("policy", choices=[p.value for p in Policy])

    deadline = subcommand(
        sub, "deadline", _deadline, "community", help="day of the month the visit alert is raised"
    )
    deadline.add_argument("day", type=int, choices=range(1, 29), metavar="DAY(1-28)")

    due = subcommand(sub, "due", _due, help="visit rate, overdue and due residents of a month")
    due.add_argument("--community", required=True)
    due.add_argument("--month", help="YYYY-MM (default: the current month)")
    due.add_argument("--as-of", help="judge as of this time (ISO 8601 with zone)")
    due.add_argument("--all", action="store_true", help="list the due residents too")

    sim = subcommand(
        sub, "simulate", _simulate, help="write a simulated month of visits (and alerts)"
    )
    sim.add_argument("--community", required=True)
    sim.add_argument("--month", required=True, help="YYYY-MM")
    sim.add_argument("--residents", type=int, default=300)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--miss-share", type=float, default=0.04)
    sim.add_argument("--until", help="only what happened before this (default: now, or all)")
    sim.add_argument("--no-alerts", action="store_true", help="visits only")
