"""``smartcommunity devices ...``: the installer's commands.

register, import (a CSV), list, show, update, maintenance, activate, decommission,
rotate (credentials), check (commissioning: wait for the first message), status
(a community's fleet). Passwords are shown once: written to ``--credentials-out``
(``-`` for stdout) as ``device_id,username,password``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from core.broker_acl import command_topic
from core.connectivity import judge
from core.device_csv import CsvFileError, parse_devices_csv, validation_reason
from core.errors import ConfigurationError, ServiceUnavailable
from core.fleet import presence_of
from core.registry import DevicePatch, DeviceSpec
from core.topics import device_filter
from smartcommunity.cli_support import (
    cli_actor,
    connect,
    database_url,
    keywords,
    print_table,
    write_credentials,
)
from smartcommunity.cli_support import settings as cli_settings
from smartcommunity.commands import SubParsers, command_group, subcommand
from smartcommunity.commissioning import (
    Arrival,
    wait_for_first_message,
    wait_stored,
)
from store import device_checks
from store import devices as registry

__all__ = ["register"]

# An installer at a new device waits a couple of report intervals, not forever.
CHECK_TIMEOUT_S = 120.0

_T = TypeVar("_T")


def _everyone(_community_id: str) -> bool:
    return True  # the CLI has the database's own rights


def _install(action: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a registry installation (one device, or a CSV's) as the CLI's operator: every
    community visible, the login user recorded as the installer."""
    with connect() as conn:
        return action(conn, *args, visible=_everyone, installed_by=cli_actor(), **kwargs)


def _fail(message: str) -> int:
    print(f"smartcommunity devices: {message}", file=sys.stderr)
    return 1


def _device(conn: Any, device_id: str) -> registry.DeviceRecord:
    found = registry.get_device(conn, device_id)
    if found is None:
        raise ConfigurationError(f"no device {device_id!r}")
    return found


def _spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "model": args.model,
        "name": args.name,
        "building": args.building,
        "unit": args.unit,
        "floor": args.floor,
        "resident_id": args.resident,
        "expected_interval_s": args.interval,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _register(args: argparse.Namespace) -> int:
    try:
        spec = DeviceSpec.model_validate(
            {
                "id": args.id,
                "community_id": args.community,
                "device_class": args.device_class,
                **_spec_fields(args),
            }
        )
    except ValidationError as exc:
        return _fail(validation_reason(exc))
    outcome = _install(registry.register_device, spec, create_locations=args.create_locations)
    if isinstance(outcome, device_checks.Problem):
        return _fail(outcome.message)
    record, password = outcome
    print(
        f"registered {record.id} ({record.device_class}) in {record.community_id}", file=sys.stderr
    )
    print(
        f"  MQTT: username {record.id}, client id {record.id}, publish "
        f"{device_filter(record.community_id, record.device_class, record.id)}, commands "
        f"{command_topic(record.community_id, record.device_class, record.id)}",
        file=sys.stderr,
    )
    write_credentials(args.credentials_out, [(record.id, password)])
    _shown_once(args.credentials_out)
    return 0


def _shown_once(target: str) -> None:
    where = "above" if target == "-" else f"in {target}"
    print(
        f"# the password is {where}, shown once: the registry keeps only a hash. "
        "The broker accepts it after `smartcommunity broker export`.",
        file=sys.stderr,
    )


def _import(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text(encoding="utf-8")
        parsed = parse_devices_csv(text)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"{path}: {exc}")
    except CsvFileError as exc:
        return _fail(f"{path}:{exc.line}: {exc.reason}; nothing imported")
    report = _install(
        registry.import_devices,
        parsed,
        skip_invalid=args.skip_invalid,
        dry_run=args.dry_run,
        create_locations=not args.no_create_locations,
    )
    for error in report.errors:
        print(f"{path}:{error.line}: {error.reason}", file=sys.stderr)
    valid = len(parsed.rows) - (len(report.errors) - len(parsed.errors))
    if args.dry_run:
        print(f"dry run: {valid} of {valid + len(report.errors)} devices would be imported")
        return 0 if not report.errors else 1
    if report.errors and not args.skip_invalid:
        print(
            f"{len(report.errors)} bad rows: nothing imported"
            " (fix them, or import the rest with --skip-invalid)",
            file=sys.stderr,
        )
        return 1
    write_credentials(args.credentials_out, [(i.device_id, i.password) for i in report.issued])
    print(
        f"imported {len(report.issued)} devices"
        + (f", skipped {len(report.errors)} bad rows" if report.errors else "")
        + (f", created {report.buildings_created} buildings" if report.buildings_created else "")
        + (f" and {report.units_created} units" if report.units_created else ""),
        file=sys.stderr,
    )
    if report.issued:
        _shown_once(args.credentials_out)
    return 0


def _row(record: registry.DeviceRecord, now: datetime) -> list[object]:
    return [
        record.id,
        record.community_id,
        record.device_class,
        record.state,
        judge(presence_of(record), now).value,
        "" if record.battery is None else f"{record.battery:g}%",
        "" if record.rssi is None else f"{record.rssi:g}",
        "/".join(p for p in (record.building, record.unit) if p),
        record.last_received_at.strftime("%Y-%m-%d %H:%M:%S") if record.last_received_at else "",
    ]


_LIST_HEADER = (
    "id",
    "community",
    "class",
    "state",
    "connectivity",
    "battery",
    "rssi",
    "place",
    "last data (UTC)",
)


# The list command's options, named as list_devices names its parameters.
_LIST_FILTERS = ("community_id", "device_class", "state", "building", "limit")


def _list(args: argparse.Namespace) -> int:
    with connect() as conn:
        rows = registry.list_devices(conn, **keywords(args, _LIST_FILTERS))
    now = datetime.now(UTC)
    print_table(_LIST_HEADER, (_row(r, now) for r in rows))
    return 0


def _show_record(record: registry.DeviceRecord) -> None:
    now = datetime.now(UTC)
    fields: list[tuple[str, object]] = [
        ("id", record.id),
        ("community", record.community_id),
        ("class", record.device_class),
        ("model", record.model),
        ("name", record.name),
        ("state", record.state),
        ("connectivity", judge(presence_of(record), now).value),
        ("expected interval", f"{record.expected_interval_s} s"),
        ("building", record.building),
        ("unit", record.unit),
        ("floor", record.floor),
        ("resident", record.resident_id),
        ("installed", f"{record.installed_at:%Y-%m-%d %H:%M} by {record.installed_by}"),
        ("credentials", "issued" if record.has_credentials else "none"),
        ("credentials rotated", record.credentials_rotated_at),
        ("last data", record.last_received_at),
        (
            "last status",
            None if record.online is None else ("online" if record.online else "offline"),
        ),
        ("battery", record.battery),
        ("rssi", record.rssi),
        ("decommissioned", record.decommissioned_at),
    ]
    for key, value in fields:
        if value not in (None, ""):
            print(f"{key + ':':<21}{value}")


def _show(args: argparse.Namespace) -> int:
    with connect() as conn:
        _show_record(_device(conn, args.id))
    return 0


def _update(args: argparse.Namespace) -> int:
    fields = _spec_fields(args)
    if not fields:
        return _fail("nothing to change: give --model, --name, --building, ... ")
    try:
        patch = DevicePatch.model_validate(fields)
    except ValidationError as exc:
        return _fail(validation_reason(exc))
    with connect() as conn:
        _device(conn, args.id)
        try:
            outcome = registry.update_device(
                conn, args.id, {k: getattr(patch, k) for k in fields}, visible=_everyone
            )
        except registry.LifecycleError as exc:
            return _fail(str(exc))
        if isinstance(outcome, device_checks.Problem):
            return _fail(outcome.message)
        _show_record(outcome)
    return 0


def _state(state: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with connect() as conn:
            _device(conn, args.id)
            try:
                record = (
                    registry.decommission(conn, args.id)
                    if state == "decommissioned"
                    else registry.set_state(conn, args.id, state)
                )
            except registry.LifecycleError as exc:
                return _fail(str(exc))
        print(f"{record.id}: {record.state}")
        if state == "decommissioned":
            print(
                "# its messages are refused now; the broker refuses it after "
                "`smartcommunity broker export`",
                file=sys.stderr,
            )
        return 0

    return run


def _rotate(args: argparse.Namespace) -> int:
    with connect() as conn:
        _device(conn, args.id)
        try:
            record, password = registry.rotate_credentials(conn, args.id)
        except registry.LifecycleError as exc:
            return _fail(str(exc))
    write_credentials(args.credentials_out, [(record.id, password)])
    _shown_once(args.credentials_out)
    return 0


def _print_arrival(arrival: Arrival, label: str) -> None:
    print(f"{label} {arrival.received_at:%H:%M:%S} {arrival.topic}")
    print(f"  payload: {arrival.shown}")
    print(f"  {arrival.verdict}")


def _check(args: argparse.Namespace) -> int:
    settings = cli_settings()
    mqtt_url = args.mqtt_url or settings.mqtt_url
    if mqtt_url is None:
        return _fail("give --mqtt-url or set SC_MQTT_URL")
    url = database_url()
    with connect() as conn:
        device = _device(conn, args.id)
    print(
        f"waiting up to {args.timeout:g} s for {device.id} ({device.device_class} in "
        f"{device.community_id}) to publish...",
        flush=True,
    )
    try:
        arrival = wait_for_first_message(
            mqtt_url,
            device,
            args.timeout,
            on_retained=lambda a: _print_arrival(a, "retained from an earlier session:"),
        )
    except (ServiceUnavailable, ConfigurationError) as exc:
        return _fail(f"broker: {exc}")
    if arrival is None:
        print(
            f"nothing from {device.id} within {args.timeout:g} s: is it powered, does it reach "
            "the broker, are its credentials exported (`smartcommunity broker export`)?"
        )
        return 1
    _print_arrival(arrival, "first message")
    if not arrival.accepted:
        return 1
    stored = wait_stored(url, device.id, arrival.received_at)
    if stored is None:
        print("  not stored by the pipeline yet: is `smartcommunity run` running?")
        return 1
    print(f"  stored by the pipeline (device row updated {stored:%H:%M:%S}): commissioned")
    return 0


def _status(args: argparse.Namespace) -> int:
    with connect() as conn:
        status = registry.fleet_status(conn, args.community, datetime.now(UTC), args.limit)
    print(f"community {status.community_id}: {status.devices} devices")
    print("  by state:        " + ", ".join(f"{k} {v}" for k, v in status.by_state.items()))
    print("  by connectivity: " + ", ".join(f"{k} {v}" for k, v in status.by_connectivity.items()))
    print(f"  low battery {status.low_battery}, weak signal {status.weak_signal}")
    if status.attention:
        print_table(
            ("attention", "class", "connectivity", "battery", "rssi", "problems"),
            (
                (
                    h.id,
                    h.device_class,
                    h.connectivity.value,
                    h.battery,
                    h.rssi,
                    ",".join(h.problems),
                )
                for h in status.attention
            ),
        )
    return 0


def _place_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model")
    parser.add_argument("--name")
    parser.add_argument("--building", help="building id in the community")
    parser.add_argument("--unit", help="unit (flat, room) id in the building")
    parser.add_argument("--floor", type=int, help="the unit's floor")
    parser.add_argument("--resident", help="the resident a wearable belongs to")
    parser.add_argument("--interval", type=int, metavar="S", help="expected report interval")


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(commands, "devices", help="register and manage devices (installers)")

    one = subcommand(
        sub,
        "register",
        _register,
        "id",
        help="register one device and print its MQTT password once",
    )
    one.add_argument("--community", required=True)
    one.add_argument("--class", dest="device_class", required=True)
    _place_arguments(one)
    one.add_argument(
        "--create-locations", action="store_true", help="create the building and unit if new"
    )
    one.add_argument("--credentials-out", default="-", metavar="FILE", help="default: stdout")

    many = subcommand(
        sub, "import", _import, help="register the devices of a CSV: all rows or none"
    )
    many.add_argument("file", type=Path)
    many.add_argument(
        "--credentials-out",
        required=True,
        metavar="FILE",
        help="where the passwords go (device_id,username,password; '-' for stdout)",
    )
    many.add_argument("--skip-invalid", action="store_true", help="import the good rows anyway")
    many.add_argument("--dry-run", action="store_true", help="validate only")
    many.add_argument(
        "--no-create-locations",
        action="store_true",
        help="refuse rows naming a building or unit not registered yet",
    )

    listing = subcommand(
        sub, "list", _list, help="devices with their connectivity, battery and signal"
    )
    listing.add_argument("--community", dest="community_id", metavar="COMMUNITY")
    listing.add_argument("--class", dest="device_class")
    listing.add_argument("--state", choices=("active", "maintenance", "decommissioned"))
    listing.add_argument("--building")
    listing.add_argument("--limit", type=int, default=1000)

    subcommand(sub, "show", _show, "id", help="one device")

    update = subcommand(
        sub, "update", _update, "id", help="change model, name, place, interval or resident"
    )
    _place_arguments(update)

    for name, state, text in (
        ("maintenance", "maintenance", "in maintenance: alerts suppressed, data still stored"),
        ("activate", "active", "back from maintenance"),
        ("decommission", "decommissioned", "retire for good (credentials destroyed)"),
    ):
        subcommand(sub, name, _state(state), "id", help=text)

    rotate = subcommand(sub, "rotate", _rotate, "id", help="new MQTT password, shown once")
    rotate.add_argument("--credentials-out", default="-", metavar="FILE", help="default: stdout")

    check = subcommand(
        sub, "check", _check, "id", help="commissioning: wait for the device's first message"
    )
    check.add_argument("--timeout", type=float, default=CHECK_TIMEOUT_S, metavar="S")
    check.add_argument("--mqtt-url", help="default: SC_MQTT_URL (an account that may read it)")

    status = subcommand(
        sub, "status", _status, "community", help="a community's fleet: connectivity, batteries"
    )
    status.add_argument("--limit", type=int, default=50, help="devices needing attention shown")
