"""``smartcommunity incidents|responders|teams ...``: dispatch from the command line, set
up responders, teams and rosters, see who is on duty (docs/incidents.md)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime, time
from typing import Any

import psycopg

from core.incidents import IncidentType, Targets, deadlines, target_problems
from core.passwords import hash_password, new_secret
from smartcommunity.cli_support import cli_actor, connect, print_table
from smartcommunity.commands import SubParsers, command_group, subcommand
from store.incidents import (
    DispatchError,
    all_targets,
    dispatch,
    dispatch_team,
    escalate_due,
    incident_of_alert,
    incident_view,
    incident_views,
    infer_arrivals,
    resolve,
    set_dispatch_gateway,
    set_targets,
    sync_alerts,
)
from store.places import community_exists, community_ids
from store.residents import assign_care_worker
from store.rosters import (
    ResponderRecord,
    add_shifts,
    create_responder,
    create_team,
    duty_board,
    get_team,
    set_responder_login,
)

__all__ = ["register"]

Conn = psycopg.Connection[Any]


def _fail(message: str) -> int:
    print(f"smartcommunity: {message}", file=sys.stderr)
    return 1


def _incident_of_alert(conn: Conn, alert_id: int) -> int | None:
    sync_alerts(conn, datetime.now(UTC))
    return incident_of_alert(conn, alert_id)


def _dispatch(args: argparse.Namespace) -> int:
    if not args.team and not args.responder:
        return _fail("name --team or --responder")
    now = datetime.now(UTC)
    with connect() as conn:
        incident = args.incident
        if args.alert is not None:
            incident = _incident_of_alert(conn, args.alert)
            if incident is None:
                return _fail(f"alert {args.alert} has no incident (below major, or closed)")
        if incident is None:
            return _fail("name --alert or --incident")
        try:
            made = []
            if args.team:
                made += dispatch_team(conn, incident, args.team, by=cli_actor(), at=now)
            if args.responder:
                made += dispatch(
                    conn,
                    incident,
                    args.responder,
                    by=cli_actor(),
                    at=now,
                    team_id=args.team,
                    reason="operator",
                )
        except DispatchError as exc:
            return _fail(str(exc))
    print(f"incident {incident}: {len(made)} dispatched")
    return 0


def _list(args: argparse.Namespace) -> int:
    with connect() as conn:
        sync_alerts(conn, datetime.now(UTC))
        rows = incident_views(
            conn,
            None,
            community_id=args.community or None,
            open_only=args.open,
            limit=100,
            newest="id",
        )
    print_table(
        ("id", "community", "building", "type", "stage", "opened", "dispatched", "arrived"),
        [
            (
                i.id,
                i.community_id,
                i.building,
                i.incident_type,
                i.stage,
                i.opened_at,
                i.dispatched_at,
                i.arrived_at,
            )
            for i in rows
        ],
    )
    return 0


def _json_value(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _show(args: argparse.Namespace) -> int:
    with connect() as conn:
        view = incident_view(conn, args.id)
        if view is None:
            return _fail(f"no incident {args.id}")
    shown = asdict(view)
    del shown["targets"]
    shown["deadlines"] = [asdict(d) for d in deadlines(view.targets, view.progress)]
    print(json.dumps(shown, indent=2, default=_json_value, ensure_ascii=False))
    return 0


def _resolve(args: argparse.Namespace) -> int:
    with connect() as conn:
        if not resolve(conn, args.id, cli_actor(), datetime.now(UTC), args.note):
            return _fail(f"no open incident {args.id}")
    return 0


def _tick(_args: argparse.Namespace) -> int:
    """One pass of the desk without the pipeline (cron, or a look at what is due)."""
    now = datetime.now(UTC)
    with connect() as conn:
        touched = sync_alerts(conn, now)
        arrived = infer_arrivals(conn, now)
        escalated = escalate_due(conn, now)
    print(f"{len(touched)} incidents updated, {arrived} arrivals inferred, {escalated} escalations")
    return 0


def _gateway(args: argparse.Namespace) -> int:
    with connect() as conn:
        if not set_dispatch_gateway(conn, args.community, args.url or None, args.secret or None):
            return _fail(f"no community {args.community!r}")
    return 0


_TARGET_KEYS = ("ack", "dispatch", "accept", "arrival", "resolve")


def _parse_set(conn: Conn, community: str, words: list[str]) -> tuple[IncidentType, Targets] | str:
    """``TYPE ack=60 dispatch=60 ...`` over the targets in force; or what is wrong."""
    try:
        kind = IncidentType(words[0])
    except ValueError:
        return f"incident type {words[0]!r}: one of {', '.join(t.value for t in IncidentType)}"
    current, _custom = all_targets(conn, community)[kind]
    values = {f"{k}_s": getattr(current, f"{k}_s") for k in _TARGET_KEYS}
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key not in _TARGET_KEYS or not value.isascii() or not value.isdigit():
            return f"{word!r}: expected KEY=SECONDS, KEY one of {', '.join(_TARGET_KEYS)}"
        values[f"{key}_s"] = int(value)
    return kind, Targets(**values)


def _targets(args: argparse.Namespace) -> int:
    with connect() as conn:
        if args.set:
            if not args.community:
                return _fail("--set needs --community")
            if not community_exists(conn, args.community):
                return _fail(f"no community {args.community!r}")
            parsed = _parse_set(conn, args.community, args.set)
            if isinstance(parsed, str):
                return _fail(parsed)
            problems = target_problems(parsed[1])
            if problems:
                return _fail("; ".join(problems))
            set_targets(conn, args.community, parsed[0].value, parsed[1])
        communities = [args.community] if args.community else community_ids(conn)
        rows = [
            (
                c,
                kind.value,
                t.ack_s,
                t.dispatch_s,
                t.accept_s,
                t.arrival_s,
                t.resolve_s,
                "set" if custom else "default",
            )
            for c in communities
            for kind, (t, custom) in all_targets(conn, c).items()
            for source in ("set" if custom else "default",)
        ]
    print_table(
        ("community", "type", "ack", "dispatch", "accept", "arrival", "resolve", "source"), rows
    )
    return 0


def _responder_add(args: argparse.Namespace) -> int:
    # No MQTT login (see credentials) and no user account yet.
    responder = ResponderRecord(
        args.id, args.community, args.name, args.role, args.phone, mqtt_username=None, user_id=None
    )
    with connect() as conn:
        if create_responder(conn, responder) is None:
            return _fail(f"responder {args.id!r} exists already")
        if args.care_for:
            assign_care_worker(conn, args.id, args.care_for)
    return 0


def _responder_credentials(args: argparse.Namespace) -> int:
    """An MQTT login for the responder's app; `broker export` puts it on the broker."""
    password = new_secret()
    username = args.username or f"responder-{args.id}"
    with connect() as conn:
        if not set_responder_login(conn, args.id, username, hash_password(password)):
            return _fail(f"no responder {args.id!r}")
    print(json.dumps({"responder_id": args.id, "username": username, "password": password}))
    return 0


def _team_add(args: argparse.Namespace) -> int:
    with connect() as conn:
        team = create_team(
            conn,
            args.id,
            args.community,
            args.building,
            args.name,
            args.kind,
            args.leader,
            datetime.now(UTC),
        )
    if team is None:
        return _fail(f"team {args.id!r} exists already")
    return 0


def _team_shift(args: argparse.Namespace) -> int:
    with connect() as conn:
        team = get_team(conn, args.team, datetime.now(UTC))
        if team is None:
            return _fail(f"no team {args.team!r}")
        add_shifts(
            conn,
            team,
            args.responder,
            args.weekday,
            time.fromisoformat(args.starts),
            time.fromisoformat(args.ends),
        )
    return 0


def _duty(args: argparse.Namespace) -> int:
    with connect() as conn:
        board = duty_board(conn, args.community, datetime.now(UTC))
    print_table(
        ("team", "kind", "building", "on duty", "nobody from"),
        [
            (
                t.id,
                t.kind,
                t.building_id or "-",
                ", ".join(t.on_duty) or "NOBODY",
                t.uncovered_at or "",
            )
            for t in board.teams
        ],
    )
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(
        commands, "incidents", help="incidents: list, show, dispatch, resolve", dest="action"
    )
    p = subcommand(sub, "list", _list, help="incidents, newest first")
    p.add_argument("--community")
    p.add_argument("--open", action="store_true", help="unresolved only")
    p = subcommand(sub, "show", _show, help="an incident with its dispatches and timeline (JSON)")
    p.add_argument("id", type=int)
    p = subcommand(sub, "dispatch", _dispatch, help="send a team (on duty) or responders")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--alert", type=int, help="the alert's incident")
    target.add_argument("--incident", type=int)
    p.add_argument("--team")
    p.add_argument("--responder", action="append", default=[])
    p = subcommand(sub, "resolve", _resolve, help="close an incident")
    p.add_argument("id", type=int)
    p.add_argument("--note", default="")
    subcommand(sub, "tick", _tick, help="group alerts, infer arrivals, escalate what is late: once")
    p = subcommand(
        sub, "targets", _targets, help="targets per incident type (seconds); --set changes one"
    )
    p.add_argument("--community")
    p.add_argument(
        "--set",
        nargs="+",
        metavar="TYPE|KEY=SECONDS",
        help="TYPE ack=60 dispatch=60 arrival=180 resolve=3600 (accept=60); others kept",
    )
    p = subcommand(
        sub, "gateway", _gateway, help="the signed webhook that carries a community's dispatches"
    )
    p.add_argument("--community", required=True)
    p.add_argument("--url", default="")
    p.add_argument("--secret", default="")

    sub = command_group(commands, "responders", help="people who can be sent", dest="action")
    p = subcommand(sub, "add", _responder_add)
    p.add_argument("--id", required=True)
    p.add_argument("--community", required=True)
    p.add_argument("--name", required=True)
    p.add_argument(
        "--role",
        required=True,
        choices=("micro_fire_station", "grid_worker", "care_worker", "guard", "property_manager"),
    )
    p.add_argument("--phone", default="")
    p.add_argument("--care-for", action="append", default=[], help="resident ids (care worker)")
    p = subcommand(
        sub,
        "credentials",
        _responder_credentials,
        "id",
        help="an MQTT login for the responder's app",
    )
    p.add_argument("--username")

    sub = command_group(commands, "teams", help="teams and duty rosters", dest="action")
    p = subcommand(sub, "add", _team_add)
    p.add_argument("--id", required=True)
    p.add_argument("--community", required=True)
    p.add_argument("--building")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--kind",
        required=True,
        choices=("micro_fire_station", "grid", "care", "security", "property"),
    )
    p.add_argument("--leader")
    p = subcommand(
        sub,
        "shift",
        _team_shift,
        help="a responder on the roster (local time; end <= start: overnight)",
    )
    p.add_argument("--team", required=True)
    p.add_argument("--responder", required=True)
    p.add_argument("--weekday", type=int, action="append", required=True, choices=range(7))
    p.add_argument("--starts", required=True, help="HH:MM")
    p.add_argument("--ends", required=True, help="HH:MM")
    p = subcommand(sub, "duty", _duty, help="who is on duty now, per team; gaps in the next 24 h")
    p.add_argument("--community", required=True)
