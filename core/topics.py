"""The one place that knows the topic grammar.

``community/{community_id}/{device_class}/{device_id}/{channel}`` for devices,
``community/{community_id}/alerts/{severity}`` for alerts we publish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from core.errors import RejectedMessage, RejectReason
from core.limits import MAX_TOPIC_CHARS, MAX_TOPIC_LEVELS

__all__ = [
    "ALL_DEVICE_TOPICS",
    "Channel",
    "DeviceTopic",
    "alert_topic",
    "device_filter",
    "device_topic",
    "parse_topic",
]

ROOT = "community"
ALL_DEVICE_TOPICS = f"{ROOT}/+/+/+/+"
# Ids appear in topics and ACL patterns: no MQTT wildcards, separators or spaces.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    community_id: str
    device_class: str
    device_id: str
    channel: Channel

    def __str__(self) -> str:
        return device_topic(self.community_id, self.device_class, self.device_id, self.channel)


def valid_id(value: str) -> bool:
    # fullmatch: '$' would let a trailing newline through.
    return _ID.fullmatch(value) is not None


def _check(kind: str, value: str) -> str:
    if not valid_id(value):
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '_', '.', ':' or '-'")
    return value


def device_topic(community_id: str, device_class: str, device_id: str, channel: str) -> str:
    _check("community id", community_id)
    _check("device class", device_class)
    _check("device id", device_id)
    return f"{ROOT}/{community_id}/{device_class}/{device_id}/{Channel(channel).value}"


def device_filter(community_id: str, device_class: str, device_id: str) -> str:
    """Everything a device may publish, as an MQTT filter (ACLs, commissioning checks)."""
    return f"{ROOT}/{community_id}/{device_class}/{device_id}/#"


def alert_topic(community_id: str, severity: str) -> str:
    return f"{ROOT}/{_check('community id', community_id)}/alerts/{severity}"


# Topics repeat per device: caching the parse makes it ~15x cheaper on the hot
# path. Sized for a large community fleet; failures are not cached (they raise).
_PARSE_CACHE_SIZE = 65_536


@lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_topic(topic: str) -> DeviceTopic:
    if len(topic) > MAX_TOPIC_CHARS:
        raise RejectedMessage(
            RejectReason.BAD_TOPIC, f"topic of {len(topic)} characters, more than {MAX_TOPIC_CHARS}"
        )
    # Split no further than one level past the grammar's: that is enough to refuse.
    parts = topic.split("/", MAX_TOPIC_LEVELS)
    if len(parts) != MAX_TOPIC_LEVELS or parts[0] != ROOT:
        raise RejectedMessage(
            RejectReason.BAD_TOPIC, f"expected {ROOT}/<community>/<class>/<device>/<channel>"
        )
    _, community_id, device_class, device_id, channel = parts
    for kind, value in (
        ("community", community_id),
        ("class", device_class),
        ("device", device_id),
    ):
        if not valid_id(value):
            raise RejectedMessage(RejectReason.BAD_TOPIC, f"invalid {kind} segment {value!r}")
    try:
        parsed_channel = Channel(channel)
    except ValueError:
        raise RejectedMessage(RejectReason.BAD_TOPIC, f"unknown channel {channel!r}") from None
    return DeviceTopic(community_id, device_class, device_id, parsed_channel)
