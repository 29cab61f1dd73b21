"""``smartcommunity decoders ...``: check decoder profiles and try one on a payload.

    smartcommunity decoders check gateway/profiles
    smartcommunity decoders try gateway/profiles/hivebox-locker.yaml report.json
    smartcommunity decoders try smoke.yaml post.json --event SmokeAlarm

``try`` needs no database or broker: the device is taken as registered, of the
profile's class, and the payload goes through the pipeline's own decoding.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.alink import PROPERTY, post_topic
from core.decode import Decoded, Limits
from core.directory import DeviceDirectory, DeviceInfo
from core.errors import ConfigurationError, RejectedMessage
from core.profiles import AlinkProduct
from gateway.decoders import Decoders, load_profile, load_profiles
from smartcommunity.commands import SubParsers, command_group, subcommand

__all__ = ["register", "render", "try_profile"]

TRY_COMMUNITY = "try"


def try_profile(
    profile_path: Path,
    payload: bytes,
    *,
    device: str = "device-1",
    topic: str | None = None,
    event: str | None = None,
    received_at: datetime | None = None,
) -> Decoded:
    """Decode ``payload`` as the pipeline would under one profile; raises
    ``RejectedMessage`` (the reject reason) or ``ConfigurationError`` (the profile)."""
    profile = load_profile(profile_path)
    if isinstance(profile, AlinkProduct):
        decoders = Decoders(products={profile.product_key: profile})
        topic = topic or post_topic(profile.product_key, device, event or PROPERTY)
    else:
        decoders = Decoders(profiles=(profile,))
        topic = topic or profile.topic.for_device(device)
    known = {device: DeviceInfo(device, TRY_COMMUNITY, profile.device_class, 300.0)}
    if not decoders.owns(topic):
        raise ConfigurationError(f"topic {topic!r} is not one the profile owns")
    registry = DeviceDirectory(load_all=lambda: known, miss_refresh_s=0)
    registry.refresh()
    return decoders.decode(topic, payload, received_at or datetime.now(UTC), registry, Limits())


def render(decoded: Decoded) -> list[dict[str, object]]:
    """The canonical content, one JSON object per reading or event."""
    out: list[dict[str, object]] = [
        {
            "reading": r.metric,
            "device": r.device_id,
            "value": r.value,
            "ts": r.ts.isoformat(),
            "seq": r.seq,
        }
        for r in decoded.readings
    ]
    if decoded.event is not None:
        e = decoded.event
        out.append(
            {
                "event": e.event,
                "device": e.device_id,
                "ts": e.ts.isoformat(),
                "seq": e.seq,
                "data": e.data,
            }
        )
    return out


def _try(args: argparse.Namespace) -> int:
    try:
        payload = (
            Path(args.payload).read_bytes() if args.payload != "-" else sys.stdin.buffer.read()
        )
        decoded = try_profile(
            args.profile, payload, device=args.device, topic=args.topic, event=args.event
        )
    except (ConfigurationError, OSError) as exc:
        print(f"smartcommunity decoders: {exc}", file=sys.stderr)
        return 2
    except RejectedMessage as exc:
        print(f"rejected: {exc.reason.value}: {exc.detail}")
        return 1
    for item in render(decoded):
        print(json.dumps(item, ensure_ascii=False, sort_keys=True))
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        decoders = load_profiles(*args.paths)
    except ConfigurationError as exc:
        print(f"smartcommunity decoders: {exc}", file=sys.stderr)
        return 1
    for key, product in decoders.products.items():
        print(
            f"alink {key}: class {product.device_class}, {len(product.properties)} properties,"
            f" {len(product.events)} events"
        )
    for profile in decoders.profiles:
        print(
            f"json {profile.name}: class {profile.device_class}, topic {profile.topic.text},"
            f" {len(profile.metrics)} metrics, {len(profile.events)} events"
        )
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(commands, "decoders", help="Alink and vendor JSON decoder profiles")
    check = subcommand(sub, "check", _check, help="validate profile files or folders")
    check.add_argument("paths", nargs="+", type=Path)
    attempt = subcommand(
        sub,
        "try",
        _try,
        help="decode a payload with a profile: canonical readings/events or the reason",
    )
    attempt.add_argument("profile", type=Path, help="one profile (YAML)")
    attempt.add_argument("payload", help="a file with the payload ('-': standard input)")
    attempt.add_argument("--device", default="device-1", help="the device id in the topic")
    attempt.add_argument("--topic", help="the MQTT topic (default: the profile's, for --device)")
    attempt.add_argument("--event", help="Alink: the event identifier (default: property post)")
