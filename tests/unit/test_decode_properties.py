"""Decode is total: for any bytes on any topic, a result or ``RejectedMessage``.

And what it accepts fits the database: float8 values, bigint seqs, timestamps
between 2000 and receipt + 24 h, text PostgreSQL can hold (UTF-8, no NUL in
identifiers), event data jsonb takes. Run with ``--hypothesis-profile=fuzz`` for
a long run (see tests/conftest.py; add ``--timeout=0 --hypothesis-show-statistics``).
"""

from __future__ import annotations

import json
import math
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from core.alink import is_alink, post_topic, reply_payload, request_id
from core.decode import Decoded, Limits, decode
from core.directory import DeviceDirectory, DeviceInfo
from core.errors import RejectedMessage
from core.limits import EARLIEST, SEQ_LIMIT
from core.metric_catalog import METRICS
from core.profiles import parse_profile
from core.topics import parse_topic
from gateway.decoders import Decoders

NOW = datetime(2026, 11, 29, 1, 2, 3, 456000, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LIMITS = Limits()
CLASSES = sorted(METRICS)
CHANNELS = ("telemetry", "event", "status")
FLOAT8_MAX = 1.7976931348623157e308

# -- strategies ------------------------------------------------------------------

ids = st.text(string.ascii_letters + string.digits + "_.:-", min_size=1, max_size=70)
topics = st.one_of(
    st.builds(
        "community/{}/{}/{}/{}".format,
        ids,
        st.sampled_from([*CLASSES, "x"]),
        ids,
        st.sampled_from([*CHANNELS, "other"]),
    ),
    st.text(max_size=300),
    st.builds("/".join, st.lists(st.text(max_size=20), max_size=12)),
)
valid_topics = st.builds(
    "community/c1/{}/d1/{}".format, st.sampled_from(CLASSES), st.sampled_from(CHANNELS)
)
huge_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), -1, 0, 10**400, -(10**400)]),
)
edge_floats = st.one_of(
    st.floats(),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, FLOAT8_MAX, -FLOAT8_MAX, 1e15, 1e16, 1e308]),
)
numbers = st.one_of(huge_ints, edge_floats)
odd_text = st.one_of(
    st.text(max_size=40),
    # Lone surrogates and NUL: json.dumps escapes them, so they reach the parser.
    st.text(st.characters(codec=None, categories=["Cs", "Cc"]), max_size=5),
    st.text(max_size=1).map(lambda c: c * 2000),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(odd_text, inner, max_size=5)
    ),
    max_leaves=30,
)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-59))]
)
iso_times = st.one_of(
    st.datetimes(timezones=zones).map(datetime.isoformat),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "9999-12-31T23:59:59.999999+00:00",
            "1999-12-31T23:59:59Z",
            "2026-11-29T01:02:03",
            "2026-02-30T00:00:00Z",
        ]
    ),
)
timestamps = st.one_of(
    huge_ints,
    st.integers(min_value=NOW_MS - 10**12, max_value=NOW_MS + 10**9),
    iso_times,
    edge_floats,
    odd_text,
)


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# Within what json.dumps can write; deeper ones are built as bytes below.
deep = st.integers(min_value=1, max_value=300).map(nested)


def deep_bytes(depth: int) -> bytes:
    return b'{"ts": 1, "metrics": ' + b"[" * depth + b"]" * depth + b"}"


def _sometimes(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 3)) == 0


@st.composite
def native_of_class(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    device_class = draw(st.sampled_from(CLASSES))
    known = st.sampled_from(sorted(METRICS[device_class]))
    names = st.one_of(known, known, known, odd_text)  # mostly known: acceptance happens too
    values = st.one_of(numbers, st.booleans(), deep, st.floats(0, 100))
    body: dict[str, Any] = {
        "ts": draw(st.one_of(timestamps, st.integers(NOW_MS - 10**9, NOW_MS))),
        "metrics": draw(st.dictionaries(names, values, min_size=1, max_size=70)),
    }
    if draw(st.booleans()):
        body["seq"] = draw(huge_ints)
    if _sometimes(draw):
        body["event"] = draw(st.sampled_from(["fall_detected", "sos_pressed", "X", ""]))
        body["data"] = draw(st.one_of(json_values, deep))
    if _sometimes(draw):
        body["online"] = draw(st.one_of(st.booleans(), scalars))
    return device_class, body


native = native_of_class().map(lambda pair: pair[1])


@st.composite
def senml(draw: st.DrawFn) -> list[Any]:
    keys = st.sampled_from(["bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "s", "t"])
    record_values = st.one_of(numbers, st.booleans(), odd_text, deep)
    records = st.dictionaries(keys, record_values, max_size=6)
    metric = st.sampled_from(sorted({m for specs in METRICS.values() for m in specs}))
    now_s = NOW.timestamp()
    plausible = st.fixed_dictionaries(
        {"n": metric, "v": st.one_of(numbers, st.floats(0, 100))},
        optional={
            "bt": st.one_of(numbers, st.floats(now_s - 10**6, now_s + 86_400 + 10)),
            "t": st.one_of(numbers, st.floats(-(10**5), 10**5)),
        },
    )
    return draw(st.lists(st.one_of(records, plausible), max_size=8))


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    native.map(lambda v: json.dumps(v).encode()),
    senml().map(lambda v: json.dumps(v).encode()),
    deep.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=100_000).map(deep_bytes),
    native.map(lambda v: json.dumps(v).encode()).map(lambda b: b[: len(b) // 2]),
)

# -- the property ------------------------------------------------------------------


def _fits_text(value: str) -> None:
    value.encode("utf-8")  # no lone surrogates: PostgreSQL text is UTF-8
    assert "\x00" not in value


def _fits_time(ts: datetime) -> None:
    assert ts.tzinfo is not None
    assert EARLIEST <= ts <= NOW + timedelta(seconds=LIMITS.max_future_s)


def _fits_seq(seq: int | None) -> None:
    assert seq is None or 0 <= seq < SEQ_LIMIT


def fits_the_database(decoded: Decoded) -> None:
    for reading in decoded.readings:
        _fits_text(reading.device_id)
        _fits_text(reading.metric)
        assert isinstance(reading.value, float)
        assert math.isfinite(reading.value)
        assert abs(reading.value) <= FLOAT8_MAX
        _fits_time(reading.ts)
        _fits_seq(reading.seq)
    if decoded.event is not None:
        _fits_text(decoded.event.event)
        _fits_time(decoded.event.ts)
        _fits_seq(decoded.event.seq)
        # jsonb: serialisable, UTF-8, finite numbers.
        json.dumps(decoded.event.data, allow_nan=False).encode("utf-8")
    if decoded.status is not None:
        _fits_time(decoded.status.ts)


def _label(outcome: str) -> None:
    """The outcomes, counted in --hypothesis-show-statistics."""
    if currently_in_test_context():
        event(outcome)


def decode_or_reject(topic: str, raw: bytes) -> Decoded | None:
    try:
        decoded = decode(parse_topic(topic), raw, NOW, LIMITS)
    except RejectedMessage as exc:
        _label(exc.reason.value)
        return None
    _label("accepted")
    fits_the_database(decoded)
    return decoded


@given(topic=topics, raw=payloads)
def test_any_bytes_on_any_topic(topic: str, raw: bytes) -> None:
    decode_or_reject(topic, raw)


@given(topic=valid_topics, raw=payloads)
def test_any_payload_on_every_channel(topic: str, raw: bytes) -> None:
    decode_or_reject(topic, raw)


@given(case=native_of_class())
def test_near_valid_native_envelopes(case: tuple[str, dict[str, Any]]) -> None:
    device_class, body = case
    for channel in CHANNELS:
        decode_or_reject(f"community/c1/{device_class}/d1/{channel}", json.dumps(body).encode())


@given(device_class=st.sampled_from(CLASSES), pack=senml())
def test_near_valid_senml_packs(device_class: str, pack: list[Any]) -> None:
    decode_or_reject(f"community/c1/{device_class}/d1/telemetry", json.dumps(pack).encode())


# Each drawn from its edges and from what fits, so that acceptance is common too.
@given(
    value=st.one_of(numbers, st.booleans(), st.integers(0, 300), st.floats(0, 300)),
    ts=st.one_of(timestamps, st.integers(NOW_MS - 10**9, NOW_MS + 86_400_010)),
    seq=st.one_of(huge_ints, st.integers(0, 2**63 - 1)),
)
def test_one_metric_at_the_edges(value: object, ts: object, seq: int) -> None:
    raw = json.dumps({"ts": ts, "seq": seq, "metrics": {"heart_rate": value}}).encode()
    decoded = decode_or_reject("community/c1/wearable/d1/telemetry", raw)
    if decoded is not None:
        (reading,) = decoded.readings
        assert 0 <= reading.value <= 300


def test_the_strategies_reach_acceptance() -> None:
    """The property is only worth something if valid messages are among the cases."""
    raw = json.dumps({"ts": NOW_MS, "seq": 2**63 - 1, "metrics": {"heart_rate": 72}}).encode()
    assert decode_or_reject("community/c1/wearable/d1/telemetry", raw) is not None
    raw = json.dumps([{"bt": NOW.timestamp(), "n": "spo2", "v": 97, "t": -1}]).encode()
    assert decode_or_reject("community/c1/wearable/d1/telemetry", raw) is not None


# -- Alink and vendor JSON (core.profile_decode, through gateway.decoders) --------

PRODUCT: Any = parse_profile(
    {
        "kind": "alink",
        "product_key": "k1",
        "device_class": "fire",
        "properties": {
            "Temp": "temperature",
            "Volt": {"metric": "battery_v", "scale": 0.01},
            "Smoke": {"metric": "smoke_obscuration", "scale": 1e-9, "offset": 0.5},
        },
        "events": {"Fault": "fault", "SmokeAlarm": "smoke_alarm"},
    }
)


def vendor(name: str, time_format: str) -> Any:
    return parse_profile(
        {
            "kind": "json",
            "name": name,
            "device_class": "locker",
            "topic": f"v/{name}/{{device}}/up",
            "device_id": "$.sn",
            "time": {"path": "$.t", "format": time_format},
            "seq": "$.n",
            "metrics": [
                {"path": "$.env.temp", "metric": "temperature", "scale": 0.1},
                {"path": "$.boxes[0]", "metric": "occupied", "scale": 2, "offset": -3},
            ],
            "events": [
                {
                    "event": "door_forced",
                    "path": "$.alarm.code",
                    "equals": "F",
                    "data": {"b": "$.alarm"},
                },
                {"event": "power_lost", "path": "$.off"},
            ],
        }
    )


DECODERS = Decoders(
    products={"k1": PRODUCT},
    profiles=(vendor("ms", "epoch_ms"), vendor("s", "epoch_s"), vendor("iso", "iso8601")),
)
KNOWN = {
    "d1": DeviceInfo("d1", "c1", "fire", 300.0),
    "d2": DeviceInfo("d2", "c1", "locker", 300.0),
}
REGISTRY = DeviceDirectory(load_all=lambda: KNOWN, miss_refresh_s=0)
REGISTRY.refresh()

identifiers = st.sampled_from(["property", "Fault", "SmokeAlarm", "Other", "1x", ""])
alink_topics = st.one_of(
    st.builds(
        post_topic,
        st.sampled_from(["k1", "k2", "k 1"]),
        st.sampled_from(["d1", "d2", "x"]),
        identifiers,
    ),
    st.builds("/sys/{}".format, st.text(max_size=60)),
    st.builds(
        "v/{}/{}/up".format,
        st.sampled_from(["ms", "s", "iso", "x"]),
        st.sampled_from(["d1", "d2", "", "+"]),
    ),
    topics,
)
property_values = st.one_of(
    numbers,
    st.booleans(),
    odd_text,
    st.sampled_from(["23.5", "1e999", "-0", "12345678901234567890"]),
    st.fixed_dictionaries(
        {"value": st.one_of(numbers, st.floats(0, 100))}, optional={"time": timestamps}
    ),
    deep,
)
alink_bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.integers(0, 2**32).map(str), huge_ints, odd_text),
        "version": odd_text,
        "method": st.sampled_from(["thing.event.property.post", "thing.event.Fault.post", "x"]),
        "sys": st.one_of(st.fixed_dictionaries({"ack": st.sampled_from([0, 1, "0"])}), scalars),
        "params": st.one_of(
            st.dictionaries(
                st.sampled_from(["Temp", "Volt", "Smoke", "Nope"]), property_values, max_size=4
            ),
            st.fixed_dictionaries({}, optional={"value": json_values, "time": timestamps}),
            json_values,
        ),
    },
)
NOW_S = int(NOW.timestamp())
vendor_bodies = st.fixed_dictionaries(
    {
        "sn": st.one_of(st.just("d2"), st.sampled_from(["d1", 2, None])),
        # Plausible for each of the three time formats, and the edges.
        "t": st.one_of(
            timestamps,
            st.integers(NOW_MS - 10**9, NOW_MS),
            st.integers(NOW_S - 10**6, NOW_S),
            st.floats(NOW_S - 10**6, NOW_S),
            st.just(NOW.isoformat()),
        ),
        "env": st.one_of(
            st.fixed_dictionaries({"temp": st.one_of(st.integers(0, 500), property_values)}),
            scalars,
        ),
    },
    optional={
        "n": st.one_of(huge_ints, st.sampled_from(["17", "x", "99999999999999999999"])),
        "boxes": st.one_of(st.lists(property_values, max_size=2), json_values),
        "alarm": st.one_of(
            st.fixed_dictionaries({"code": st.sampled_from(["F", "G", 1, True])}), json_values
        ),
        "off": st.one_of(st.booleans(), scalars, deep),
    },
)
foreign_payloads = st.one_of(
    payloads,
    alink_bodies.map(lambda v: json.dumps(v).encode()),
    vendor_bodies.map(lambda v: json.dumps(v).encode()),
)


def foreign_or_reject(topic: str, raw: bytes) -> Decoded | None:
    # The answer to the device is built for every outcome; it must be JSON too.
    try:
        decoded = DECODERS.decode(topic, raw, NOW, REGISTRY, LIMITS)
    except RejectedMessage as exc:
        _label(f"foreign {exc.reason.value}")
        if is_alink(topic):
            json.loads(reply_payload(None, request_id(raw), exc.reason, exc.detail))
        return None
    _label("foreign accepted")
    fits_the_database(decoded)
    assert decoded.readings or decoded.event is not None
    json.loads(reply_payload(None, request_id(raw), None))
    return decoded


@given(topic=alink_topics, raw=foreign_payloads)
def test_any_bytes_on_any_foreign_topic(topic: str, raw: bytes) -> None:
    foreign_or_reject(topic, raw)


@given(identifier=identifiers, body=alink_bodies)
def test_near_valid_alink_posts(identifier: str, body: dict[str, Any]) -> None:
    foreign_or_reject(f"/sys/k1/d1/thing/event/{identifier}/post", json.dumps(body).encode())


@given(name=st.sampled_from(["ms", "s", "iso"]), body=vendor_bodies)
def test_near_valid_vendor_payloads(name: str, body: dict[str, Any]) -> None:
    foreign_or_reject(f"v/{name}/d2/up", json.dumps(body).encode())


def test_the_foreign_strategies_reach_acceptance() -> None:
    post = {"id": "9", "params": {"Temp": 21.5, "Volt": {"value": 360, "time": NOW_MS}}}
    decoded = foreign_or_reject("/sys/k1/d1/thing/event/property/post", json.dumps(post).encode())
    assert decoded is not None
    assert [r.value for r in decoded.readings] == [21.5, 3.6]
    body = {"sn": "d2", "t": NOW.isoformat(), "env": {"temp": 215}, "alarm": {"code": "F"}}
    decoded = foreign_or_reject("v/iso/d2/up", json.dumps(body).encode())
    assert decoded is not None
    assert decoded.event is not None
