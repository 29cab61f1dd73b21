"""Alink posts and vendor JSON into the same readings and events as the native envelope.

Total, as ``core.decode`` is: any bytes end as a ``Decoded`` or a
``RejectedMessage`` with a stable reason. The same limits apply before
anything is converted (size, depth, strings, numbers), and every value goes
through the same catalogue check (``checked_value``), so rules, storage and
the dashboard cannot tell a vendor's reading from a native one.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import orjson

from core.alink import AlinkTopic, method_of, seq_of
from core.decode import (
    Decoded,
    Limits,
    check_event_data,
    checked_value,
    device_timestamp,
    epoch_time,
)
from core.errors import RejectedMessage, RejectReason
from core.limits import (
    MAX_ABS_NUMBER,
    MAX_METRICS,
    SEQ_LIMIT,
    check_depth,
    check_text,
    refine_json_error,
)
from core.models import DeviceEvent, Reading
from core.profiles import AlinkProduct, JsonPath, JsonProfile, MetricMap
from core.topics import Channel, DeviceTopic

__all__ = ["decode_alink", "decode_json", "load_json"]

# Vendors often send numbers as strings ("23.5"); short decimal literals only.
_NUMBER_TEXT = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,16})?([eE][-+]?[0-9]{1,3})?")
_MAX_ISO_CHARS = 64


def _not_finite(literal: str) -> float:
    raise RejectedMessage(RejectReason.NOT_FINITE, f"JSON value {literal} is not finite")


def load_json(payload: bytes, limits: Limits) -> Any:
    """Size and depth first, then a strict UTF-8 parse; NaN and Infinity refused."""
    if len(payload) > limits.max_payload_bytes:
        raise RejectedMessage(
            RejectReason.PAYLOAD_TOO_LARGE,
            f"{len(payload)} bytes exceeds the limit of {limits.max_payload_bytes}",
        )
    check_depth(payload)
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        # orjson refuses integers past 64 bits; the standard parser takes them (they
        # are bounded below before any arithmetic) and names NaN literals.
        try:
            return json.loads(payload.decode("utf-8"), parse_constant=_not_finite)
        except ValueError:
            raise refine_json_error(payload) from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _number(name: str, raw: object) -> float | int:
    """A JSON value as a bounded number: bools are 1/0, short numeric strings count."""
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, str) and _NUMBER_TEXT.fullmatch(raw):
        raw = float(raw)
    if isinstance(raw, int):
        if abs(raw) > MAX_ABS_NUMBER:
            raise RejectedMessage(RejectReason.OUT_OF_RANGE, f"{name}: |value| above 1e15")
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise RejectedMessage(RejectReason.NOT_FINITE, f"{name} is NaN or infinite")
        if abs(raw) > MAX_ABS_NUMBER:
            raise RejectedMessage(RejectReason.OUT_OF_RANGE, f"{name}: |value| above 1e15")
        return raw
    raise RejectedMessage(RejectReason.BAD_PAYLOAD, f"{name}: {_short(raw)} is not a number")


def _scaled(device_class: str, name: str, mapping: MetricMap, raw: object) -> float:
    number = _number(name, raw)
    # Bounded inputs and factors (1e15 * 1e9): the product is a finite float.
    value = (
        number * mapping.scale + mapping.offset if mapping.scale != 1 or mapping.offset else number
    )
    return checked_value(device_class, mapping.metric, value)


def _epoch_ms(name: str, raw: object, received_at: datetime, limits: Limits) -> datetime:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, f"{name}: {_short(raw)} is not epoch ms")
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise RejectedMessage(RejectReason.NOT_FINITE, f"{name} is NaN or infinite")
        return epoch_time(raw / 1000, received_at, limits)
    return device_timestamp(raw, received_at, limits)


def _time(profile: JsonProfile, document: Any, received_at: datetime, limits: Limits) -> datetime:
    spec = profile.time
    if spec is None:
        return received_at
    found, raw = spec.path.find(document)
    name = spec.path.text
    if not found or raw is None:
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, f"no time at {name}")
    if spec.format == "epoch_ms":
        return _epoch_ms(name, raw, received_at, limits)
    if spec.format == "epoch_s":
        seconds = _number(name, raw)
        return epoch_time(float(seconds), received_at, limits)
    if not isinstance(raw, str) or len(raw) > _MAX_ISO_CHARS:
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, f"{name}: not an ISO 8601 time")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise RejectedMessage(
            RejectReason.BAD_PAYLOAD, f"{name}: {_short(raw)} is not an ISO 8601 time"
        ) from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, f"{name}: a time without its offset")
    return device_timestamp(ts, received_at, limits)


def _seq(path: JsonPath | None, document: Any) -> int | None:
    if path is None:
        return None
    found, raw = path.find(document)
    if not found or raw is None:
        return None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19:
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < SEQ_LIMIT:
        raise RejectedMessage(
            RejectReason.BAD_PAYLOAD, f"{path.text}: {_short(raw)} is not a seq (0 ≤ n < 2^63)"
        )
    return raw


def _event_data(data: Any) -> dict[str, Any]:
    check_event_data(data)
    return data if isinstance(data, dict) else {"value": data}


# -- Alink -------------------------------------------------------------------------


def _alink_body(payload: bytes, topic: AlinkTopic, limits: Limits) -> dict[str, Any]:
    body = load_json(payload, limits)
    if not isinstance(body, dict):
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, "an Alink post is a JSON object")
    method = body.get("method")
    if method is not None and method != method_of(topic):
        raise RejectedMessage(
            RejectReason.BAD_PAYLOAD,
            f"method {_short(method)} does not match the topic's {method_of(topic)!r}",
        )
    return body


def decode_alink(
    product: AlinkProduct,
    alink: AlinkTopic,
    topic: DeviceTopic,
    payload: bytes,
    received_at: datetime,
    limits: Limits,
) -> Decoded:
    """A property post into readings, an event post into an event; ``topic`` is the
    device as the registry knows it (community, class)."""
    body = _alink_body(payload, alink, limits)
    seq = seq_of(body.get("id"))
    params = body.get("params")
    if not isinstance(params, dict):
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, "params: an object is required")
    if not alink.is_property:
        return _alink_event(product, alink, topic, params, seq, received_at, limits)
    if not params:
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, "params: no properties")
    if len(params) > MAX_METRICS:
        raise RejectedMessage(
            RejectReason.BAD_PAYLOAD, f"params: more than {MAX_METRICS} properties"
        )
    readings: list[Reading] = []
    for identifier, item in params.items():
        mapping = product.properties.get(identifier)
        if mapping is None:
            if product.unknown_properties == "ignore":
                continue
            raise RejectedMessage(
                RejectReason.UNKNOWN_METRIC,
                f"{_short(identifier)} is not a property of product {product.product_key!r}",
            )
        ts = received_at
        raw = item
        if isinstance(item, dict):  # {"value": v, "time": ms}
            if "value" not in item:
                raise RejectedMessage(RejectReason.BAD_PAYLOAD, f"params.{identifier}: no value")
            raw = item["value"]
            if item.get("time") is not None:
                ts = _epoch_ms(f"params.{identifier}.time", item["time"], received_at, limits)
        value = _scaled(topic.device_class, f"params.{identifier}", mapping, raw)
        readings.append(Reading(topic.device_id, mapping.metric, ts, value, seq, received_at))
    return Decoded(topic, readings=readings)


def _alink_event(
    product: AlinkProduct,
    alink: AlinkTopic,
    topic: DeviceTopic,
    params: dict[str, Any],
    seq: int | None,
    received_at: datetime,
    limits: Limits,
) -> Decoded:
    mapping = product.events.get(alink.identifier)
    if mapping is None:
        raise RejectedMessage(
            RejectReason.UNKNOWN_EVENT,
            f"{alink.identifier!r} is not an event of product {product.product_key!r}",
        )
    ts = received_at
    if params.get("time") is not None:
        ts = _epoch_ms("params.time", params["time"], received_at, limits)
    data = params.get("value", {})
    if not isinstance(data, dict):
        raise RejectedMessage(RejectReason.BAD_PAYLOAD, "params.value: an object is required")
    event = DeviceEvent(topic.device_id, mapping.event, ts, _event_data(data), seq, received_at)
    return Decoded(topic, event=event)


# -- vendor JSON -------------------------------------------------------------------


def _matches(event_equals: object, value: object) -> bool:
    if event_equals is None:
        return value is True
    # type first: True == 1 in Python, and a vendor's "1" is not 1.
    return type(value) is type(event_equals) and value == event_equals


def decode_json(
    profile: JsonProfile, topic: DeviceTopic, payload: bytes, received_at: datetime, limits: Limits
) -> Decoded:
    document = load_json(payload, limits)
    if profile.device_id is not None:
        found, claimed = profile.device_id.find(document)
        if not found or claimed != topic.device_id:
            raise RejectedMessage(
                RejectReason.BAD_PAYLOAD,
                f"{profile.device_id.text} is {_short(claimed) if found else 'missing'}, "
                f"the topic names {topic.device_id!r}",
            )
    ts = _time(profile, document, received_at, limits)
    seq = _seq(profile.seq, document)
    readings: list[Reading] = []
    for metric in profile.metrics:
        found, raw = metric.path.find(document)
        if not found or raw is None:
            if metric.required:
                raise RejectedMessage(
                    RejectReason.BAD_PAYLOAD, f"{metric.path.text} ({metric.metric}) is missing"
                )
            continue
        value = _scaled(topic.device_class, metric.path.text, metric, raw)
        readings.append(Reading(topic.device_id, metric.metric, ts, value, seq, received_at))
    event = None
    for spec in profile.events:
        found, value = spec.path.find(document)
        if found and _matches(spec.equals, value):
            data: dict[str, Any] = {}
            for key, path in spec.data.items():
                present, item = path.find(document)
                if present:
                    data[check_text(key, "an event data key")] = item
            event = DeviceEvent(
                topic.device_id, spec.event, ts, _event_data(data), seq, received_at
            )
            break  # one event per message: the first that matches, in profile order
    if not readings and event is None:
        raise RejectedMessage(
            RejectReason.BAD_PAYLOAD, f"nothing in the payload matches profile {profile.name!r}"
        )
    channel = Channel.TELEMETRY if readings else Channel.EVENT
    return Decoded(
        DeviceTopic(topic.community_id, topic.device_class, topic.device_id, channel),
        readings=readings,
        event=event,
    )
