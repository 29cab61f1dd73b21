"""SenML (RFC 8428) JSON packs resolved into plain records.

Resolution follows RFC 8428 §4.5/§4.6: name = bn + n, time = bt + t, unit = u or
bu, value = bv + v. Times below 2**28 are relative to "now" (the receive time),
as the published RFC says; larger ones are absolute seconds since the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.errors import RejectedMessage, RejectReason
from core.limits import MAX_ABS_NUMBER, MAX_SENML_RECORDS, check_text

__all__ = ["SenmlRecord", "resolve_pack"]

# RFC 8428 §4.5.3: values of t below 2**28 seconds (about 8.5 years) are relative.
RELATIVE_TIME_LIMIT = 2**28
_BASE_KEYS = {"bn", "bt", "bu", "bv", "bs", "bver"}
_KEYS = _BASE_KEYS | {"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
_VALUE_KEYS = ("v", "vs", "vb", "vd")


@dataclass(frozen=True, slots=True)
class SenmlRecord:
    name: str
    time: float  # absolute seconds since the epoch
    unit: str | None
    value: float | bool | str | None  # str for vs and vd (base64 text)
    kind: str  # which value field carried it: v, vs, vb, vd or s
    relative: bool  # the time was relative and resolved against the receive time


def _bad(detail: str) -> RejectedMessage:
    return RejectedMessage(RejectReason.BAD_PAYLOAD, f"SenML: {detail}")


def _number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"'{key}' must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise RejectedMessage(RejectReason.NOT_FINITE, f"SenML '{key}' is not finite")
    # Bounded before float(): a huge integer would overflow, and sums of two huge
    # floats (bt + t, bv + v) would become infinite.
    if not -MAX_ABS_NUMBER <= value <= MAX_ABS_NUMBER:
        raise RejectedMessage(
            RejectReason.OUT_OF_RANGE, f"SenML '{key}' is beyond ±{MAX_ABS_NUMBER:g}"
        )
    return float(value)


def _text(record: dict[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise _bad(f"'{key}' must be a string")
    return check_text(value, f"SenML '{key}'")


def resolve_pack(pack: Any, *, now: float) -> list[SenmlRecord]:
    """Resolve a parsed SenML JSON pack; ``now`` is the receive time in epoch seconds."""
    if not isinstance(pack, list) or not pack:
        raise _bad("a pack is a non-empty JSON array of records")
    if len(pack) > MAX_SENML_RECORDS:
        raise RejectedMessage(
            RejectReason.TOO_MANY_VALUES, f"SenML pack of more than {MAX_SENML_RECORDS} records"
        )
    base_name, base_time, base_unit, base_value, base_sum = "", 0.0, None, 0.0, 0.0
    out: list[SenmlRecord] = []
    for index, record in enumerate(pack):
        if not isinstance(record, dict):
            raise _bad(f"record {index} is not an object")
        unknown = set(record) - _KEYS
        # RFC 8428 §4.4: labels ending in '_' are must-understand; others may be ignored.
        if any(key.endswith("_") for key in unknown):
            raise _bad(f"record {index} has must-understand fields {sorted(unknown)}")
        if "bn" in record:
            base_name = _text(record, "bn")
        base_time = (_number(record, "bt") or 0.0) if "bt" in record else base_time
        base_value = (_number(record, "bv") or 0.0) if "bv" in record else base_value
        base_sum = (_number(record, "bs") or 0.0) if "bs" in record else base_sum
        if "bu" in record:
            base_unit = _text(record, "bu")
        carried = [key for key in _VALUE_KEYS if key in record]
        if len(carried) > 1:
            raise _bad(f"record {index} carries more than one value {carried}")
        if not carried and "s" not in record:
            if set(record) - _BASE_KEYS:
                raise _bad(f"record {index} has no value")
            continue  # a record of base fields only
        name = base_name + (_text(record, "n") if "n" in record else "")
        if not name:
            raise _bad(f"record {index} has no name")
        offset = _number(record, "t") or 0.0
        time = (base_time or 0.0) + offset
        relative = time < RELATIVE_TIME_LIMIT
        if relative:
            time += now
        unit = _text(record, "u") if "u" in record else base_unit
        value: float | bool | str | None
        if not carried:
            kind, value = "s", (base_sum or 0.0) + (_number(record, "s") or 0.0)
        else:
            kind = carried[0]
            raw = record[kind]
            if kind == "v":
                value = (base_value or 0.0) + (_number(record, "v") or 0.0)
            elif kind == "vb":
                if not isinstance(raw, bool):
                    raise _bad("'vb' must be true or false")
                value = raw
            else:
                value = _text(record, kind)
        out.append(SenmlRecord(name, time, unit, value, kind, relative))
    if not out:
        raise _bad("the pack has no records with values")
    return out
