"""``smartcommunity community ...`` and ``smartcommunity building ...``: where devices go."""

from __future__ import annotations

import argparse
import sys
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from core.device_csv import validation_reason
from core.registry import BuildingSpec, UnitSpec
from core.topics import valid_id
from smartcommunity.cli_support import connect, print_table
from smartcommunity.commands import SubParsers, command_group, subcommand
from store import places

__all__ = ["register"]


def _fail(message: str) -> int:
    print(f"smartcommunity: {message}", file=sys.stderr)
    return 1


def _create(args: argparse.Namespace) -> int:
    if not valid_id(args.id):
        return _fail(f"invalid community id {args.id!r}: letters, digits, '_', '.', '-'")
    try:
        ZoneInfo(args.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(f"unknown time zone {args.time_zone!r}: use an IANA name")
    with connect() as conn:
        created = places.create_community(
            conn, args.id, args.name or args.id, args.kind, args.time_zone
        )
    if created is None:
        return _fail(f"community {args.id!r} already exists")
    print(f"created community {args.id} ({args.kind}, {args.time_zone})")
    return 0


def _list(_args: argparse.Namespace) -> int:
    with connect() as conn:
        totals = places.community_totals(conn)
    print_table(
        ("id", "name", "kind", "time zone", "devices", "buildings"),
        ((t.id, t.name, t.kind, t.time_zone, t.devices, t.buildings) for t in totals),
    )
    return 0


def _add_building(args: argparse.Namespace) -> int:
    try:
        spec = BuildingSpec(
            id=args.id, name=args.name or "", address=args.address or "", floors=args.floors
        )
    except ValidationError as exc:
        return _fail(validation_reason(exc))
    with connect() as conn:
        if not places.community_exists(conn, args.community):
            return _fail(f"no community {args.community!r}")
        if places.create_building(conn, args.community, spec) is None:
            return _fail(f"building {args.id!r} already exists in {args.community}")
    print(f"added building {args.id} to {args.community}")
    return 0


def _add_unit(args: argparse.Namespace) -> int:
    try:
        spec = UnitSpec(id=args.id, floor=args.floor)
    except ValidationError as exc:
        return _fail(validation_reason(exc))
    with connect() as conn:
        if places.get_building(conn, args.community, args.building) is None:
            return _fail(f"no building {args.building!r} in {args.community!r}")
        if not places.create_unit(conn, args.community, args.building, spec):
            return _fail(f"unit {args.id!r} already exists")
    print(f"added unit {args.id} to {args.community}/{args.building}")
    return 0


def _list_buildings(args: argparse.Namespace) -> int:
    with connect() as conn:
        found = places.list_buildings(conn, args.community, after=None, limit=10_000)
    print_table(
        ("building", "name", "floors", "units"),
        ((b.id, b.name, b.floors, len(b.units)) for b in found),
    )
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(commands, "community", help="communities devices belong to")
    create = subcommand(sub, "create", _create, "id", help="create a community")
    create.add_argument("--name")
    create.add_argument("--kind", choices=("urban", "rural"), default="urban")
    create.add_argument("--time-zone", default="Asia/Shanghai")
    subcommand(sub, "list", _list, help="communities with their device counts")

    bsub = command_group(commands, "building", help="buildings and units of a community")
    add = subcommand(bsub, "add", _add_building, "community", "id", help="add a building")
    add.add_argument("--name")
    add.add_argument("--address")
    add.add_argument("--floors", type=int)
    unit = subcommand(
        bsub,
        "unit",
        _add_unit,
        "community",
        "building",
        "id",
        help="add a unit (flat, room) to a building",
    )
    unit.add_argument("--floor", type=int)
    subcommand(bsub, "list", _list_buildings, "community", help="a community's buildings")
