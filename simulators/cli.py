"""``smartcommunity simulate``: the arguments and the entry point the main CLI hooks in.

parser = subparsers.add_parser("simulate", help="publish simulated devices")
simulators.cli.add_arguments(parser)
...
return simulators.cli.main_from_args(args)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from pydantic import ValidationError

from core.errors import ConfigurationError, ServiceUnavailable
from core.models import Device
from core.settings import Settings
from simulators.alink import alink_devices, load_product, run_alink
from simulators.community import demo_devices
from simulators.connection import Protocol
from simulators.credentials import DeviceCredentials, load_credentials, write_credentials
from simulators.faults import FAULT_KINDS, build_fault
from simulators.fleet import PER_DEVICE_AUTO_MAX, PER_DEVICE_CONNECTIONS_MAX
from simulators.injector import inject_faults
from simulators.population import generate_community
from simulators.registration import issue_credentials, register_devices
from simulators.roster import RosterEntry, read_roster, write_roster
from simulators.runner import run_simulation
from simulators.stats import Progress, SimulationStats
from simulators.uitd import INCIDENTS as UITD_INCIDENTS
from simulators.uitd import SimulatedUitd, play_incident
from store import schema

__all__ = ["add_arguments", "main_from_args"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError("must be a non-negative number of seconds")
    return value


def _rate(text: str) -> float:
    if text.lower() == "max":
        return math.inf
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive, or 'max'")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    panel = parser.add_argument_group("a building fire panel's UITD (GB/T 26875.3 over TCP)")
    panel.add_argument(
        "--uitd",
        metavar="HOST:PORT",
        help="play panel incidents to the fire bridge at HOST:PORT instead of MQTT devices",
    )
    panel.add_argument(
        "--uitd-address", default="793000000000", metavar="HEX", help="the UITD's 6-byte address"
    )
    panel.add_argument(
        "--incident",
        action="append",
        choices=sorted(UITD_INCIDENTS),
        help="incident to play, in order (repeatable; default: all but link_cut, then link_cut)",
    )
    panel.add_argument(
        "--pause", type=float, default=2.0, metavar="S", help="seconds between incidents"
    )
    parser.add_argument(
        "--devices", type=_positive_int, default=100, help="how many demo devices (default 100)"
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=None,
        metavar="MSGS_PER_S",
        help="telemetry messages a second across all devices, or 'max' "
        "(default: each device at its own reporting interval)",
    )
    parser.add_argument(
        "--duration", type=_seconds, default=None, metavar="S", help="stop after S seconds"
    )
    parser.add_argument(
        "--messages",
        type=_positive_int,
        default=None,
        metavar="N",
        help="stop after N telemetry messages, for benchmarks (default: no limit; Ctrl-C stops)",
    )
    parser.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="split the fleet, the rate and the message count between N processes",
    )
    parser.add_argument(
        "--mqtt-url", default=None, help="mqtt://[user:password@]host:port (default: SC_MQTT_URL)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same readings")
    parser.add_argument("--community", default="demo", help="community id (default: demo)")
    parser.add_argument(
        "--alink",
        type=Path,
        metavar="PROFILE",
        help="simulate --devices devices of this Alink product profile instead: property "
        "and event posts on /sys/{productKey}/{deviceName}/..., answers counted",
    )
    parser.add_argument(
        "--incident-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiply the rates of incidents (falls, alarms, forced doors); 0 for none",
    )
    parser.add_argument(
        "--time-zone", default=None, help="community time zone (default: SC_TIME_ZONE)"
    )
    parser.add_argument("--protocol", choices=("auto", "5", "3.1.1"), default="auto")
    connections = parser.add_mutually_exclusive_group()
    connections.add_argument(
        "--per-device-connections",
        dest="per_device_connections",
        action="store_const",
        const=True,
        default=None,
        help="one MQTT connection per device, each with its own Last Will (up to "
        f"{PER_DEVICE_CONNECTIONS_MAX} per process; the default up to {PER_DEVICE_AUTO_MAX})",
    )
    connections.add_argument(
        "--shared-connection",
        dest="per_device_connections",
        action="store_const",
        const=False,
        help="every device over one connection (no Will per device): the fastest",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=None,
        metavar="CSV",
        help="per-device MQTT credentials (device_id,username,password) for a broker that "
        "makes every device log in as itself; implies --per-device-connections",
    )
    parser.add_argument(
        "--keep-online",
        action="store_true",
        help="leave the devices' retained status online when the run ends",
    )
    parser.add_argument(
        "--progress-interval",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="seconds between progress lines",
    )
    roster = parser.add_argument_group("the community (default: --devices demo devices)")
    roster.add_argument(
        "--buildings",
        type=_positive_int,
        default=None,
        metavar="N",
        help="generate a community of N buildings with flats, residents and their devices",
    )
    roster.add_argument("--kind", choices=("urban", "rural"), default="urban")
    roster.add_argument(
        "--roster",
        type=Path,
        default=None,
        metavar="FILE",
        help="simulate the devices of a devices.csv or community.json",
    )
    roster.add_argument(
        "--roster-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write devices.csv (installer import) and community.json (buildings, residents)",
    )
    roster.add_argument(
        "--register",
        action="store_true",
        help="register the community and its devices in the database (SC_DATABASE_URL)",
    )
    roster.add_argument(
        "--credentials-out",
        type=Path,
        default=None,
        metavar="CSV",
        help="with --register: where the MQTT passwords issued to new devices go "
        "(default: ./<community>-credentials.csv; pass it as --credentials to log in with them)",
    )
    roster.add_argument(
        "--no-run",
        action="store_true",
        help="generate, write and register, then exit without publishing",
    )
    faults = parser.add_argument_group("faults (instead of a simulation)")
    faults.add_argument(
        "--fault",
        action="append",
        choices=(*FAULT_KINDS, "all"),
        metavar="KIND",
        help="publish this fault once and exit; repeat for several, 'all' for every kind "
        f"({', '.join(FAULT_KINDS)})",
    )
    faults.add_argument(
        "--device",
        default=None,
        help="the registered device the faults come from (default: the roster's first)",
    )


def _print_progress(progress: Progress) -> None:
    print(
        f"{progress.elapsed_s:7.1f} s  {progress.telemetry:>10,} telemetry  "
        f"{progress.events:>8,} events  {progress.rate:>9,.0f} msg/s",
        flush=True,
    )


def _inject(args: argparse.Namespace, mqtt_url: str, roster: list[Device]) -> int:
    kinds = FAULT_KINDS if "all" in args.fault else tuple(dict.fromkeys(args.fault))
    if args.device is None:
        device = roster[0]
    else:
        found = [d for d in roster if d.id == args.device]
        if not found:
            print(f"simulate: device {args.device!r} is not in the roster", file=sys.stderr)
            return 2
        device = found[0]
    credentials = load_credentials(args.credentials) if args.credentials else None
    now = datetime.now(UTC)
    faults = [build_fault(kind, device=device, now=now, seed=args.seed) for kind in kinds]
    report = inject_faults(
        faults,
        mqtt_url=mqtt_url,
        protocol=cast(Protocol, args.protocol),
        credentials=credentials,
    )
    print(f"{'fault':<18} {'device':<28} {'msgs':>4}  the platform must")
    for fault in faults:
        if fault.reason is not None:
            outcome = f"dead-letter each as {fault.reason.value}"
        elif fault.drop_connection:
            outcome = "store it; the retained status stays online (no Will)"
        else:
            outcome = f"store {fault.stored} reading time(s), dead-letter nothing"
        print(f"{fault.kind:<18} {fault.device_id:<28} {len(fault.messages):>4}  {outcome}")
    print(f"published {report.messages} messages for {report.faults} faults", flush=True)
    return 0


def _roster(args: argparse.Namespace, settings: Settings) -> list[RosterEntry]:
    """The devices to simulate, written and registered when asked."""
    if args.roster is not None:
        entries = read_roster(args.roster)
    elif args.buildings is not None:
        community = generate_community(
            args.community, buildings=args.buildings, seed=args.seed, kind=args.kind
        )
        if args.roster_out is not None:
            for path in write_roster(community, args.roster_out):
                print(f"wrote {path}")
        entries = [(p.device, p.building) for p in community.placed]
        print(
            f"community {community.id}: {len(community.buildings)} buildings, "
            f"{len(community.units)} flats, {len(community.residents)} residents, "
            f"{len(entries)} devices"
        )
    elif args.alink is not None:
        product = load_product(args.alink)
        devices = alink_devices(product, community_id=args.community, count=args.devices)
        entries = [(d, None) for d in devices]
    else:
        devices = demo_devices(community_id=args.community, count=args.devices, seed=args.seed)
        entries = [(d, None) for d in devices]
    if args.register:
        url = settings.database_url
        if url is None:
            raise ConfigurationError("--register needs SC_DATABASE_URL")
        schema.upgrade(url)
        done = register_devices(
            url, [d for d, _ in entries], buildings={d.id: b for d, b in entries}
        )
        print(f"registered {done.new} new of {done.devices} devices")
        # As the registry does for an installer: each device gets its own MQTT password,
        # so `smartcommunity broker export` can let it log in as itself.
        issued = issue_credentials(url, [d.id for d, _ in entries])
        if issued:
            out = args.credentials_out or Path(f"{args.community}-credentials.csv")
            write_credentials(out, issued)
            print(
                f"issued MQTT credentials to {len(issued)} devices: {out} "
                "(then `smartcommunity broker export`; simulate with --credentials on a "
                "broker that makes each device log in)"
            )
    return entries


def _report(stats: SimulationStats) -> None:
    print(
        f"published {stats.published:,} of {stats.sent:,} messages "
        f"({stats.telemetry:,} telemetry, {stats.events:,} events, {stats.statuses:,} statuses) "
        f"in {stats.elapsed_s:.1f} s: {stats.rate:,.0f} msg/s"
        + (f"; {stats.unconfirmed:,} unconfirmed" if stats.unconfirmed else "")
        + (f"; {stats.refused:,} refused" if stats.refused else ""),
        flush=True,
    )


def _run_alink(
    args: argparse.Namespace,
    mqtt_url: str,
    devices: list[Device],
    credentials: dict[str, DeviceCredentials] | None,
) -> int:
    """0 when every post was answered 200 (stored), 1 otherwise."""
    alink = run_alink(
        mqtt_url=mqtt_url,
        product=load_product(args.alink),
        devices=devices,
        duration_s=60.0 if args.duration is None else args.duration,
        seed=args.seed,
        incident_scale=args.incident_scale,
        protocol=cast(Protocol, "3.1.1" if args.protocol == "auto" else args.protocol),
        credentials=credentials,
    )
    refused = ", ".join(f"{n} x {code}" for code, n in sorted(alink.refused.items()))
    print(
        f"alink: {alink.posts} posts from {len(devices)} devices, {alink.accepted} answered 200"
        + (f", refused: {refused}" if refused else "")
        + (f", {alink.posts - alink.answered} unanswered" if alink.answered < alink.posts else ""),
        flush=True,
    )
    return 0 if alink.accepted == alink.posts else 1


_ANSWERS: dict[int | None, str] = {3: "confirmed", 6: "denied"}


def _uitd(args: argparse.Namespace) -> int:
    host, _, port = str(args.uitd).rpartition(":")
    if not host or not port.isdigit():
        print("simulate: --uitd wants HOST:PORT", file=sys.stderr)
        return 2
    incidents = args.incident or ["fire", "second_detector", "fault", "main_power", "link_cut"]

    async def play() -> int:
        uitd = SimulatedUitd(host, int(port), bytes.fromhex(args.uitd_address))
        await uitd.connect()
        failed = 0
        try:
            for i, name in enumerate(incidents):
                if i:
                    await asyncio.sleep(args.pause)
                answers = await play_incident(uitd, name)
                words = [_ANSWERS.get(a, "no answer") for a in answers]
                print(f"{name}: {', '.join(words) or 'done'}", flush=True)
                failed += sum(a != 3 for a in answers)
        finally:
            await uitd.close()
        return 0 if failed == 0 else 1

    try:
        return asyncio.run(play())
    except OSError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1


def main_from_args(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``simulate``; 0 when every message was acknowledged, 1 otherwise, 2 on bad input.

    ``settings`` are the process's, built by the entry point: options override them.
    """
    if getattr(args, "uitd", None):
        return _uitd(args)
    mqtt_url: str | None = args.mqtt_url or settings.mqtt_url
    zone_name: str = args.time_zone or settings.time_zone
    try:
        time_zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"simulate: unknown time zone {zone_name!r}", file=sys.stderr)
        return 2
    try:
        roster = _roster(args, settings)
        if args.no_run:
            return 0
        if mqtt_url is None:
            print("simulate: give --mqtt-url or set SC_MQTT_URL", file=sys.stderr)
            return 2
        devices = [d for d, _ in roster]
        if args.fault:
            return _inject(args, mqtt_url, devices)
        credentials = load_credentials(args.credentials) if args.credentials else None
        if args.alink is not None:
            return _run_alink(args, mqtt_url, devices, credentials)
        stats = run_simulation(
            mqtt_url=mqtt_url,
            roster=devices,
            seed=args.seed,
            rate=args.rate,
            duration_s=args.duration,
            max_messages=args.messages,
            incident_scale=args.incident_scale,
            time_zone=time_zone,
            protocol=cast(Protocol, args.protocol),
            per_device_connections=True if credentials else args.per_device_connections,
            credentials=credentials,
            mark_offline_on_stop=not args.keep_online,
            processes=args.processes,
            progress_interval_s=args.progress_interval,
            on_progress=_print_progress,
            handle_signals=True,
        )
    except (OSError, ValueError, ValidationError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    except (ServiceUnavailable, ConfigurationError, psycopg.Error) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    _report(stats)
    return 0 if stats.unconfirmed == 0 and stats.refused == 0 else 1
