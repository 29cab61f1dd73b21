"""The error hierarchy. Each error carries its facts as attributes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "ConfigurationError",
    "MessageFailure",
    "RejectReason",
    "RejectedMessage",
    "ServiceUnavailable",
    "SmartCommunityError",
]


class SmartCommunityError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigurationError(SmartCommunityError):
    """Settings that cannot work; fatal at start-up."""


class ServiceUnavailable(SmartCommunityError):
    """A broker or database we need is not reachable now; retry later."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service} unavailable: {detail}")
        self.service = service
        self.detail = detail


class RejectReason(StrEnum):
    """Why a message became a dead letter. Values are stable: metrics and API use them."""

    BAD_TOPIC = "bad_topic"
    BAD_JSON = "bad_json"
    BAD_PAYLOAD = "bad_payload"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_METRIC = "unknown_metric"
    UNKNOWN_EVENT = "unknown_event"
    FUTURE_TIMESTAMP = "future_timestamp"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_DECOMMISSIONED = "device_decommissioned"
    CLASS_MISMATCH = "class_mismatch"
    COMMUNITY_MISMATCH = "community_mismatch"
    DATABASE_REFUSED = "database_refused"
    # Bounds of core.limits, checked before any conversion.
    TOO_DEEP = "too_deep"
    TOO_MANY_VALUES = "too_many_values"
    STRING_TOO_LONG = "string_too_long"
    # Handling the message raised something unexpected; the exception is in the detail.
    INTERNAL_ERROR = "internal_error"
    # In flight during two crashes in a row: quarantined without being decoded again.
    POISON = "poison"


class RejectedMessage(SmartCommunityError):
    """A message that cannot be accepted; it becomes a dead letter."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MessageFailure:
    """One message that made a later stage raise (the rule engine, after its commit).

    Carries what its dead letter needs: the message is already stored and
    acknowledged, so the dead letter records the failure, not a refusal."""

    topic: str
    payload: bytes
    received_at: datetime
    stage: str
    error: Exception
