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

from core.decode import Decoded, Limits, decode
from core.errors import RejectedMessage
from core.limits import EARLIEST, SEQ_LIMIT
from core.metrics import METRICS
from core.topics import parse_topic

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
