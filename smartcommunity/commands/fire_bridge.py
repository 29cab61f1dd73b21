"""``smartcommunity fire-bridge``: serve UITDs (GB/T 26875.3), and register and map them."""

from __future__ import annotations

import argparse
import sys

import psycopg

from core.gbt26875 import parse_address
from firebridge.registry import map_point, register_uitd, uitds
from smartcommunity.cli_support import connect, keywords, print_table
from smartcommunity.cli_support import settings as cli_settings
from smartcommunity.commands import SubParsers, subcommand

__all__ = ["register"]


def _fail(message: str) -> int:
    print(f"smartcommunity: {message}", file=sys.stderr)
    return 1


def _serve(args: argparse.Namespace) -> int:
    from firebridge.service import serve

    settings = cli_settings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(
            update={"fire_bridge": settings.fire_bridge.model_copy(update=overrides)}
        )

    serve(settings)
    return 0


def _register(args: argparse.Namespace) -> int:
    try:
        address = parse_address(args.address)
    except ValueError as exc:
        return _fail(str(exc))
    with connect() as conn:
        try:
            register_uitd(
                conn,
                device_id=args.device_id,
                community_id=args.community,
                address=address,
                building=args.building,
                name=args.name or "",
                auto_provision=args.auto_provision,
                heartbeat_s=args.heartbeat,
            )
        except ValueError as exc:
            return _fail(str(exc))
        except psycopg.errors.UniqueViolation:
            return _fail(f"a device {args.device_id!r} or a UITD at {args.address} exists already")
        except psycopg.errors.ForeignKeyViolation:
            return _fail(f"no community {args.community!r}")
    print(f"registered UITD {args.device_id} at address {address.hex()}")
    return 0


# The map command's options, named as map_point names its parameters.
_POINT_OPTIONS = (
    "uitd_id",
    "device_id",
    "system_type",
    "system_address",
    "zone",
    "position",
    "component_type",
    "description",
)


def _map(args: argparse.Namespace) -> int:
    with connect() as conn:
        try:
            key = map_point(conn, **keywords(args, _POINT_OPTIONS))
        except ValueError as exc:
            return _fail(str(exc))
        except psycopg.errors.UniqueViolation:
            return _fail(f"device {args.device_id!r} or that point is registered already")
    print(f"mapped point {key} of {args.uitd_id} to device {args.device_id}")
    return 0


def _list(_args: argparse.Namespace) -> int:
    with connect() as conn:
        rows = uitds(conn)
    print_table(
        (
            "uitd",
            "community",
            "address",
            "building",
            "auto-provision",
            "heartbeat s",
            "online",
            "points",
        ),
        rows,
    )
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    parser = subcommand(
        commands,
        "fire-bridge",
        _serve,
        help="GB/T 26875.3 server for building fire panels' UITDs (docs/fire-bridge.md)",
    )
    parser.add_argument("--host", help="listen address (default SC_FIRE_BRIDGE__HOST)")
    parser.add_argument("--port", type=int, help="TCP port (default SC_FIRE_BRIDGE__PORT, 9000)")
    sub = parser.add_subparsers(dest="fire_bridge_cmd")

    reg = subcommand(sub, "register", _register, help="register a UITD by its 6-byte address")
    reg.add_argument("--community", required=True)
    reg.add_argument("--device-id", required=True, help="the UITD's platform device id")
    reg.add_argument("--address", required=True, help="6 bytes in hex as sent, e.g. 793000000000")
    reg.add_argument("--building", help="building id: panel points are placed there")
    reg.add_argument("--name")
    reg.add_argument(
        "--auto-provision",
        action="store_true",
        help="create a device for a panel point on its first report (off: unknown_device)",
    )
    reg.add_argument("--heartbeat", type=int, default=60, help="link lost after this silence (s)")

    mapping = subcommand(sub, "map", _map, help="map a panel system or component to a new device")
    mapping.add_argument("--uitd", dest="uitd_id", metavar="UITD", required=True)
    mapping.add_argument("--device-id", required=True)
    mapping.add_argument("--system-type", type=int, required=True, help="1: fire alarm system")
    mapping.add_argument("--system-address", type=int, required=True)
    mapping.add_argument("--zone", type=int, help="component: zone (loop), first 2 address bytes")
    mapping.add_argument("--position", type=int, help="component: position, last 2 bytes")
    mapping.add_argument("--component-type", type=int, help="e.g. 42: photoelectric smoke")
    mapping.add_argument("--description", default="")

    subcommand(sub, "list", _list, help="registered UITDs")
