"""``smartcommunity rules list|show|apply|enable|disable`` and ``smartcommunity alerts list``.

Rules live in the database; running pipelines pick changes up within a second.
``apply`` validates every rule of every file first and writes nothing if one is
wrong, naming the file and the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import psycopg
import yaml

from alerts.pack import DEFAULTS_DIR, load_rules
from core.rules import dump_rule
from smartcommunity.cli_support import database_url
from smartcommunity.commands import SubParsers, command_group, subcommand
from store import alert_reads
from store import rules as rules_store

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    with psycopg.connect(database_url()) as conn:
        rows = rules_store.load_rule_rows(conn)
    print(f"{'id':<32} {'type':<15} {'severity':<9} {'enabled':<8} {'source':<8} title")
    for row in rows:
        rule = row.rule
        if args.type and rule.type != args.type:
            continue
        enabled = "yes" if row.enabled else "no"
        print(
            f"{row.id:<32} {rule.type:<15} {rule.severity.value:<9} {enabled:<8}"
            f" {row.source:<8} {rule.title}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    with psycopg.connect(database_url()) as conn:
        rows = rules_store.load_rule_rows(conn, args.id)
    if not rows:
        print(f"no rule {args.id!r}", file=sys.stderr)
        return 1
    data = dump_rule(rows[0].rule)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    return 0


def _apply(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files]
    if args.defaults:
        paths.append(DEFAULTS_DIR)
    if not paths:
        print("give rule files (or --defaults)", file=sys.stderr)
        return 2
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"no such file: {missing[0]}", file=sys.stderr)
        return 2
    rules = load_rules(*paths)  # raises with file and field on the first bad rule
    if args.dry_run:
        print(f"{len(rules)} rules valid (nothing written)")
        return 0
    with psycopg.connect(database_url()) as conn:
        count = rules_store.upsert_rules(conn, rules, "default" if args.defaults else "cli")
    print(f"applied {count} rules")
    return 0


def _enable(args: argparse.Namespace, enabled: bool) -> int:
    with psycopg.connect(database_url()) as conn:
        rows = rules_store.load_rule_rows(conn, args.id)
        if not rows:
            print(f"no rule {args.id!r}", file=sys.stderr)
            return 1
        rules_store.set_enabled(conn, args.id, enabled)
    print(f"{'enabled' if enabled else 'disabled'} {args.id}")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    with psycopg.connect(database_url()) as conn:
        rows = alert_reads.list_alerts(
            conn,
            None,
            limit=args.limit,
            active=None if args.all else True,
            community_id=args.community or None,
        )
    for a in rows:
        print(
            f"{a.id:>6} {a.raised_at:%Y-%m-%d %H:%M:%S} {a.severity:<8} {a.state:<12}"
            f" {a.rule_id:<28} {a.subject:<32} x{a.occurrences:<3} {a.title}"
        )
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(commands, "rules", help="alert rules: list, show, apply, enable, disable")
    list_ = subcommand(sub, "list", _list, help="every rule with its state")
    list_.add_argument("--type", help="only rules of this type (threshold, event, ...)")
    show = subcommand(sub, "show", _show, "id", help="one rule as YAML (or --json)")
    show.add_argument("--json", action="store_true")
    apply = subcommand(
        sub, "apply", _apply, help="create or replace rules from YAML/JSON files or folders"
    )
    apply.add_argument("files", nargs="*", metavar="FILE")
    apply.add_argument("--defaults", action="store_true", help="(re)apply the shipped pack")
    apply.add_argument("--dry-run", action="store_true", help="validate only")
    for name, enabled in (("enable", True), ("disable", False)):
        subcommand(
            sub,
            name,
            partial(_enable, enabled=enabled),
            "id",
            help=f"{name} a rule (no restart needed)",
        )

    alerts = subcommand(
        commands, "alerts", _alerts, help="list alerts (the API has the full lifecycle)"
    )
    alerts.add_argument("--all", action="store_true", help="resolved ones too")
    alerts.add_argument("--community")
    alerts.add_argument("--limit", type=int, default=50)
