"""Bounds on what one message may carry, checked before anything is converted.

A device (or an attacker with a device's credentials) controls every byte of
a payload. Each bound here keeps one class of hostile input from reaching code
that would raise something other than ``RejectedMessage``: a float conversion
of a 400-digit integer, a recursive parser, a ``datetime`` past year 9999, a
``bigint`` column. The README's contract lists them all; change both together.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from core.errors import RejectedMessage, RejectReason

__all__ = [
    "EARLIEST",
    "EARLIEST_S",
    "MAX_ABS_NUMBER",
    "MAX_DATA_NODES",
    "MAX_DETAIL_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_METRICS",
    "MAX_SENML_RECORDS",
    "MAX_STRING_CHARS",
    "MAX_TOPIC_CHARS",
    "MAX_TOPIC_LEVELS",
    "SEQ_LIMIT",
    "check_depth",
    "check_text",
    "refine_json_error",
]

# Anything earlier is a device sending seconds where milliseconds belong, or an
# unset RTC; both would file readings decades in the past.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
EARLIEST_S = EARLIEST.timestamp()
# seq is stored in a PostgreSQL bigint: 0 <= seq < 2**63.
SEQ_LIMIT = 2**63
# Any number a SenML record carries (v, s, bv, bs, bt, t). Far beyond every metric's
# physical range and every epoch time in seconds, yet sums of two stay finite and
# exact enough; an integer past it is refused before it is made a float.
MAX_ABS_NUMBER = 1e15
# The grammar has 5 levels of ids up to 64 characters: 256 leaves room and stops
# a 64 KiB topic before it is split or cached.
MAX_TOPIC_CHARS = 256
MAX_TOPIC_LEVELS = 5
# Objects and arrays inside one another. The native envelope needs 2 (SenML 2);
# event data may nest a little. Recursive parsers fail far deeper than this.
MAX_JSON_DEPTH = 16
# Metrics in one native message; SenML records in one pack.
MAX_METRICS = 64
MAX_SENML_RECORDS = 1_000
# Any string a message carries (event data keys and values, SenML names, units,
# string values): it ends up in a row, a log line or a dead letter's detail.
MAX_STRING_CHARS = 1_024
# Values (scalars and containers) in one event's data.
MAX_DATA_NODES = 1_000
# A dead letter's detail is for people; the raw payload is kept beside it.
MAX_DETAIL_CHARS = 500

_OPENERS = (b"[", b"{")
# Strings (with escapes) or brackets: brackets inside strings do not nest.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def check_depth(payload: bytes) -> None:
    """Refuse JSON nested deeper than ``MAX_JSON_DEPTH`` before any parser recurses."""
    # The count of opening brackets bounds the depth: the common case costs two scans in C.
    if payload.count(b"[") + payload.count(b"{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for match in _TOKENS.finditer(payload):
        token = match.group()
        if token in _OPENERS:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise RejectedMessage(
                    RejectReason.TOO_DEEP, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
                )
        elif token in (b"]", b"}"):
            depth -= 1


def check_text(value: str, what: str) -> str:
    if len(value) > MAX_STRING_CHARS:
        raise RejectedMessage(
            RejectReason.STRING_TOO_LONG,
            f"{what} has {len(value)} characters, more than {MAX_STRING_CHARS}",
        )
    return value


def refine_json_error(payload: bytes) -> RejectedMessage:
    """Why a payload did not parse; JSON text is UTF-8 (RFC 8259), so either is bad JSON."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RejectedMessage(RejectReason.BAD_JSON, f"payload is not UTF-8 (byte {exc.start})")
    return RejectedMessage(RejectReason.BAD_JSON, "payload is not valid JSON")
