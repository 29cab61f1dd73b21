"""The responder's side of MQTT: dispatch topics and the reply payload.

A dispatch is pushed to ``community/{c}/dispatch/{responder}`` (QoS 1); the
responder's app or device answers on ``community/{c}/dispatch-reply/{responder}``
with ``{"dispatch_id": 12, "action": "received" | "accept" | "decline" | "arrive"}``.
Four levels, so the pipeline's device subscription (five levels) never sees them;
the broker export lets each responder read only their own dispatch topic and write
only their own reply topic. An escalation to the street-level control room is pushed
to ``community/{c}/control-room/escalations`` (read by the API's account).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.topics import ROOT, valid_id

__all__ = [
    "REPLY_FILTER",
    "BadReply",
    "Reply",
    "control_room_topic",
    "dispatch_topic",
    "parse_reply",
    "reply_topic",
]

REPLY_FILTER = f"{ROOT}/+/dispatch-reply/+"
# A reply is a few dozen bytes; anything past this is not one.
MAX_REPLY_BYTES = 1024


class BadReply(ValueError):
    """A reply that cannot be taken: its reason goes to the dead letter."""


def dispatch_topic(community_id: str, responder_id: str) -> str:
    return f"{ROOT}/{community_id}/dispatch/{responder_id}"


def control_room_topic(community_id: str) -> str:
    return f"{ROOT}/{community_id}/control-room/escalations"


def reply_topic(community_id: str, responder_id: str) -> str:
    return f"{ROOT}/{community_id}/dispatch-reply/{responder_id}"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    dispatch_id: int = Field(ge=1, le=2**63 - 1)
    action: Literal["received", "accept", "decline", "arrive"]


@dataclass(frozen=True, slots=True)
class Reply:
    community_id: str
    responder_id: str
    dispatch_id: int
    action: str


def parse_reply(topic: str, payload: bytes) -> Reply:
    """The reply on ``topic``, or ``BadReply`` with the reason."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[2] != "dispatch-reply":
        raise BadReply(f"not a reply topic: {topic[:200]!r}")
    if not (valid_id(parts[1]) and valid_id(parts[3])):
        raise BadReply("invalid community or responder id in the topic")
    if len(payload) > MAX_REPLY_BYTES:
        raise BadReply(f"reply larger than {MAX_REPLY_BYTES} bytes")
    try:
        body = _Body.model_validate(json.loads(payload))
    except (ValueError, ValidationError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise BadReply(f"invalid reply: {str(exc)[:300]}") from exc
    return Reply(parts[1], parts[3], body.dispatch_id, body.action)
