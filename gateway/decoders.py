"""Decoder profiles on the pipeline's path: load them, route a topic, accept a message.

A folder of YAML files (``SC_DECODERS__PROFILES``, e.g. the shipped ``profiles/``),
one profile each, loaded like the rule pack: an error names the file and the
field. Topics outside ``community/…`` that a profile owns (``/sys/{pk}/…`` for an
Alink product, a vendor's topic pattern) are decoded here; the device is found in
the registry by the device name (Alink) or the topic's ``{device}`` level, and
its class must be the profile's. The result is an ``Accepted`` like any other,
whose readings and events the writer, the rule engine and the API treat alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from core.alink import alink_filter, is_alink, parse_alink_topic
from core.decode import Decoded, Limits
from core.directory import DeviceDirectory
from core.errors import ConfigurationError, RejectedMessage, RejectReason
from core.limits import MAX_TOPIC_CHARS
from core.profile_decode import decode_alink, decode_json
from core.profiles import AlinkProduct, JsonProfile, Profile, parse_profile
from core.topics import Channel, DeviceTopic, valid_id

__all__ = ["Decoders", "describe_errors", "load_profile", "load_profiles"]


def describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        # ("profile", "alink" | "json", field...): the wrapper's two levels say nothing.
        loc = [str(p) for p in error["loc"]]
        if loc[:1] == ["profile"]:
            loc = loc[2:] if len(loc) > 1 and loc[1] in ("alink", "json") else loc[1:]
        message = error["msg"].removeprefix("Value error, ")
        # A check across fields (the catalogue's) names its field in the message.
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts)


def load_profile(file: Path) -> Profile:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{file}: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") not in ("alink", "json"):
        raise ConfigurationError(f"{file}: kind: a profile says `kind: alink` or `kind: json`")
    try:
        return parse_profile(data)
    except ValidationError as exc:
        raise ConfigurationError(f"{file}: {describe_errors(exc)}") from exc


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    if not path.exists():
        raise ConfigurationError(f"{path}: no such profile file or folder")
    return [path]


@dataclass(frozen=True, slots=True)
class Decoders:
    """The loaded profiles: Alink products by key, vendor profiles in file order."""

    products: dict[str, AlinkProduct] = field(default_factory=dict)
    profiles: tuple[JsonProfile, ...] = ()

    @property
    def topic_filters(self) -> list[str]:
        """What the pipeline subscribes to besides the native topics."""
        return [alink_filter(k) for k in self.products] + [
            p.topic.mqtt_filter for p in self.profiles
        ]

    def __bool__(self) -> bool:
        return bool(self.products or self.profiles)

    def owns(self, topic: str) -> bool:
        """Topics decoded here; everything else is the native contract's."""
        return is_alink(topic) or any(p.topic.match(topic) is not None for p in self.profiles)

    def decode(
        self,
        topic_name: str,
        payload: bytes,
        received_at: datetime,
        registry: DeviceDirectory,
        limits: Limits,
    ) -> Decoded:
        """Route, check the device in the registry, decode; ``RejectedMessage`` if refused."""
        if len(topic_name) > MAX_TOPIC_CHARS:
            raise RejectedMessage(
                RejectReason.BAD_TOPIC,
                f"topic of {len(topic_name)} characters, more than {MAX_TOPIC_CHARS}",
            )
        if is_alink(topic_name):
            alink = parse_alink_topic(topic_name)
            product = self.products.get(alink.product_key)
            if product is None:
                raise RejectedMessage(
                    RejectReason.BAD_TOPIC, f"no product profile for {alink.product_key!r}"
                )
            channel = Channel.TELEMETRY if alink.is_property else Channel.EVENT
            topic = _registered(registry, alink.device_name, product.device_class, channel)
            return decode_alink(product, alink, topic, payload, received_at, limits)
        for profile in self.profiles:
            device = profile.topic.match(topic_name)
            if device is None:
                continue
            if not valid_id(device):
                raise RejectedMessage(RejectReason.BAD_TOPIC, f"invalid device {device!r}")
            topic = _registered(registry, device, profile.device_class, Channel.TELEMETRY)
            return decode_json(profile, topic, payload, received_at, limits)
        raise RejectedMessage(RejectReason.BAD_TOPIC, "no profile owns this topic")


def _registered(
    registry: DeviceDirectory, device_id: str, device_class: str, channel: Channel
) -> DeviceTopic:
    """The device as registered; refused as the native path refuses (unknown,
    decommissioned, or of another class than the profile's)."""
    info = registry.lookup(device_id)
    community = info.community_id if info is not None else "unregistered"
    topic = DeviceTopic(community, device_class, device_id, channel)
    registry.check(topic)
    return topic


def load_profiles(*paths: Path) -> Decoders:
    """Profiles from files or folders; duplicates (a product key, a topic) are errors."""
    products: dict[str, AlinkProduct] = {}
    profiles: list[JsonProfile] = []
    seen: dict[str, Path] = {}
    for path in paths:
        for file in _files(path):
            profile = load_profile(file)
            if isinstance(profile, AlinkProduct):
                key = f"product key {profile.product_key!r}"
                products[profile.product_key] = profile
            else:
                key = f"topic {profile.topic.mqtt_filter!r}"
                profiles.append(profile)
                name = f"profile name {profile.name!r}"
                if name in seen:
                    raise ConfigurationError(f"{file}: {name} is also in {seen[name]}")
                seen[name] = file
            if key in seen:
                raise ConfigurationError(f"{file}: {key} is also in {seen[key]}")
            seen[key] = file
    return Decoders(products, tuple(profiles))
