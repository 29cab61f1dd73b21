"""``smartcommunity simulate``: the arguments and the entry point the main CLI hooks in.

parser = subparsers.add_parser("simulate", help="publish simulated devices")
simulators.cli.add_arguments(parser)
...
return simulators.cli.main_from_args(args)
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import ConfigurationError, ServiceUnavailable
from core.settings import Settings
from simulators.connection import Protocol
from simulators.runner import run_simulation
from simulators.stats import Progress

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
    parser.add_argument("--devices", type=_positive_int, default=100, help="how many devices")
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
        help="stop after N telemetry messages (default: no limit; Ctrl-C stops)",
    )
    parser.add_argument(
        "--mqtt-url", default=None, help="mqtt://[user:password@]host:port (default: SC_MQTT_URL)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same readings")
    parser.add_argument("--community", default="demo", help="community id (default: demo)")
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
    parser.add_argument(
        "--per-device-connections",
        action="store_true",
        help="one MQTT connection per device, each with its own Will (small fleets)",
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


def _print_progress(progress: Progress) -> None:
    print(
        f"{progress.elapsed_s:7.1f} s  {progress.telemetry:>10,} telemetry  "
        f"{progress.events:>8,} events  {progress.rate:>9,.0f} msg/s",
        flush=True,
    )


def main_from_args(args: argparse.Namespace) -> int:
    """Run ``simulate``; 0 when every message was acknowledged, 1 otherwise, 2 on bad input."""
    mqtt_url: str | None = args.mqtt_url
    zone_name: str | None = args.time_zone
    if mqtt_url is None or zone_name is None:
        settings = Settings()
        mqtt_url = mqtt_url or settings.mqtt_url
        zone_name = zone_name or settings.time_zone
    if mqtt_url is None:
        print("simulate: give --mqtt-url or set SC_MQTT_URL", file=sys.stderr)
        return 2
    try:
        time_zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"simulate: unknown time zone {zone_name!r}", file=sys.stderr)
        return 2
    try:
        stats = run_simulation(
            mqtt_url=mqtt_url,
            community_id=args.community,
            devices=args.devices,
            seed=args.seed,
            rate=args.rate,
            duration_s=args.duration,
            max_messages=args.messages,
            incident_scale=args.incident_scale,
            time_zone=time_zone,
            protocol=cast(Protocol, args.protocol),
            per_device_connections=args.per_device_connections,
            mark_offline_on_stop=not args.keep_online,
            progress_interval_s=args.progress_interval,
            on_progress=_print_progress,
            handle_signals=True,
        )
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    except (ServiceUnavailable, ConfigurationError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    print(
        f"published {stats.published:,} of {stats.sent:,} messages "
        f"({stats.telemetry:,} telemetry, {stats.events:,} events, {stats.statuses:,} statuses) "
        f"in {stats.elapsed_s:.1f} s: {stats.rate:,.0f} msg/s"
        + (f"; {stats.unconfirmed:,} unconfirmed" if stats.unconfirmed else "")
        + (f"; {stats.refused:,} refused" if stats.refused else ""),
        flush=True,
    )
    return 0 if stats.unconfirmed == 0 and stats.refused == 0 else 1
