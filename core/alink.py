"""The Alink thing-model contract over MQTT: topics, payloads and replies.

Installer gateways and many Chinese community devices speak Alibaba-IoT-style
Alink JSON instead of our envelope:

- ``/sys/{productKey}/{deviceName}/thing/event/property/post`` with
  ``{"id": "1", "version": "1.0", "params": {"Temp": 23.5, "Bat": {"value": 80,
  "time": 1764378123456}}, "method": "thing.event.property.post"}``;
- ``/sys/{productKey}/{deviceName}/thing/event/{identifier}/post`` with
  ``{"id": "2", "params": {"value": {...}, "time": 1764378123456}}``;
- the platform answers on the same topic plus ``_reply`` with
  ``{"id": "1", "code": 200, "message": "success", "data": {}, ...}``.

Pure (no I/O): the grammar is here so that the gateway, the ACL export and the
simulators agree on it. What a product's identifiers mean is in its product
profile (``core.profiles``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from core.errors import RejectedMessage, RejectReason
from core.limits import MAX_TOPIC_CHARS
from core.topics import valid_id

__all__ = [
    "PROPERTY",
    "AlinkTopic",
    "alink_filter",
    "device_post_filter",
    "device_reply_filter",
    "error_code",
    "is_alink",
    "method_of",
    "parse_alink_topic",
    "post_topic",
    "reply_payload",
    "reply_topic",
    "request_id",
    "wants_reply",
]

ROOT = "/sys"
# The identifier of the property post; every other one names an event.
PROPERTY = "property"
REPLY_SUFFIX = "_reply"
# Alink identifiers: a letter or underscore, then letters, digits, underscores.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
# Alink's own product keys are 11 characters; room for other vendors' longer ones.
_PRODUCT_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Alink message ids: decimal digits, 0 to 4294967295; anything else is not one.
_REQUEST_ID = re.compile(rb'"id"\s*:\s*"([0-9]{1,10})"')
_MAX_REQUEST_ID = 4_294_967_295
# Reply codes: 200 as Alink's; refusals map onto Alink's families (4xx: the request,
# 5xx: ours). The reason and its detail go in ``message``.
OK = 200
_CODE_IDENTITY = 403
_CODE_PARAMS = 460
_CODE_SERVER = 500
_IDENTITY_REASONS = frozenset(
    {
        RejectReason.UNKNOWN_DEVICE,
        RejectReason.DEVICE_DECOMMISSIONED,
        RejectReason.CLASS_MISMATCH,
        RejectReason.COMMUNITY_MISMATCH,
        RejectReason.BAD_TOPIC,
    }
)
_SERVER_REASONS = frozenset(
    {RejectReason.INTERNAL_ERROR, RejectReason.DATABASE_REFUSED, RejectReason.POISON}
)
# A reply's message quotes the refusal; devices log it, keep it short.
_MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class AlinkTopic:
    product_key: str
    device_name: str
    identifier: str  # "property" for a property post, else the event's identifier

    @property
    def is_property(self) -> bool:
        return self.identifier == PROPERTY


def is_alink(topic: str) -> bool:
    return topic.startswith(ROOT + "/")


def post_topic(product_key: str, device_name: str, identifier: str = PROPERTY) -> str:
    return f"{ROOT}/{product_key}/{device_name}/thing/event/{identifier}/post"


def reply_topic(topic: str) -> str:
    return topic + REPLY_SUFFIX


def alink_filter(product_key: str) -> str:
    """What the pipeline subscribes to for one product: every device's posts."""
    return f"{ROOT}/{product_key}/+/thing/event/+/post"


def device_post_filter(product_key: str, device_name: str) -> str:
    """What one device may publish (the broker's ACL)."""
    return f"{ROOT}/{product_key}/{device_name}/thing/event/+/post"


def device_reply_filter(product_key: str, device_name: str) -> str:
    """What one device may read: the replies to its own posts."""
    return f"{ROOT}/{product_key}/{device_name}/thing/event/+/post{REPLY_SUFFIX}"


def valid_product_key(value: str) -> bool:
    return _PRODUCT_KEY.fullmatch(value) is not None


def parse_alink_topic(topic: str) -> AlinkTopic:
    """``/sys/{pk}/{dn}/thing/event/{identifier}/post``, or ``RejectedMessage(bad_topic)``."""
    if len(topic) > MAX_TOPIC_CHARS:
        raise RejectedMessage(
            RejectReason.BAD_TOPIC, f"topic of {len(topic)} characters, more than {MAX_TOPIC_CHARS}"
        )
    parts = topic.split("/", 8)
    if (
        len(parts) != 8
        or parts[0] != ""
        or parts[1] != "sys"
        or parts[4:6] != ["thing", "event"]
        or parts[7] != "post"
    ):
        raise RejectedMessage(
            RejectReason.BAD_TOPIC, "expected /sys/<productKey>/<deviceName>/thing/event/<id>/post"
        )
    product_key, device_name, identifier = parts[2], parts[3], parts[6]
    if not valid_product_key(product_key):
        raise RejectedMessage(RejectReason.BAD_TOPIC, f"invalid product key {product_key!r}")
    if not valid_id(device_name):
        raise RejectedMessage(RejectReason.BAD_TOPIC, f"invalid device name {device_name!r}")
    if _IDENTIFIER.fullmatch(identifier) is None:
        raise RejectedMessage(RejectReason.BAD_TOPIC, f"invalid identifier {identifier!r}")
    return AlinkTopic(product_key, device_name, identifier)


def method_of(topic: AlinkTopic) -> str:
    return f"thing.event.{topic.identifier}.post"


def request_id(payload: bytes) -> str:
    """The post's ``id`` for its reply, found without trusting the payload to parse:
    a refused payload gets its reply too. "" when there is none."""
    match = _REQUEST_ID.search(payload[:4096])
    if match is None:
        return ""
    value = match.group(1).decode("ascii")
    return value if int(value) <= _MAX_REQUEST_ID else ""


def seq_of(request: object) -> int | None:
    """An Alink id as our per-device ``seq`` (unique per device message in Alink)."""
    if isinstance(request, str) and request.isascii() and request.isdigit() and len(request) <= 10:
        value = int(request)
        return value if value <= _MAX_REQUEST_ID else None
    return None


def wants_reply(body: Any) -> bool:
    """``"sys": {"ack": 0}`` asks for no reply; anything else gets one."""
    if isinstance(body, dict):
        options = body.get("sys")
        if isinstance(options, dict) and options.get("ack") == 0:
            return False
    return True


def error_code(reason: RejectReason | None) -> int:
    if reason is None:
        return OK
    if reason in _IDENTITY_REASONS:
        return _CODE_IDENTITY
    if reason in _SERVER_REASONS:
        return _CODE_SERVER
    return _CODE_PARAMS


def reply_payload(
    topic: AlinkTopic | None, request: str, reason: RejectReason | None, detail: str = ""
) -> bytes:
    message = "success" if reason is None else f"{reason.value}: {detail}"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
    body: dict[str, object] = {
        "id": request,
        "code": error_code(reason),
        "data": {},
        "message": message,
        "version": "1.0",
    }
    if topic is not None:
        body["method"] = method_of(topic)
    return orjson.dumps(body)
