from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.decode import Limits, decode
from core.errors import RejectedMessage, RejectReason
from core.senml import resolve_pack
from core.topics import parse_topic

NOW = datetime(2026, 11, 29, 1, 2, 3, 456000, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
TELEMETRY = parse_topic("community/c1/wearable/w1/telemetry")
FIRE = parse_topic("community/c1/fire/f1/telemetry")
TELEMETRY_TOPIC = "community/c1/wearable/w1/telemetry"
EVENT_TOPIC = "community/c1/wearable/w1/event"


def payload(obj: object) -> bytes:
    return json.dumps(obj).encode()


def rejected(topic_str: str, raw: bytes, limits: Limits | None = None) -> RejectedMessage:
    with pytest.raises(RejectedMessage) as info:
        decode(parse_topic(topic_str), raw, NOW, limits)
    return info.value


# -- native envelope -----------------------------------------------------------


def test_native_telemetry_with_epoch_ms() -> None:
    raw = payload({"ts": NOW_MS, "seq": 1842, "metrics": {"heart_rate": 72, "spo2": 97.5}})
    decoded = decode(TELEMETRY, raw, NOW)
    assert [(r.metric, r.value, r.seq, r.ts) for r in decoded.readings] == [
        ("heart_rate", 72.0, 1842, NOW),
        ("spo2", 97.5, 1842, NOW),
    ]
    assert decoded.device_time == NOW
    assert all(r.received_at == NOW for r in decoded.readings)


def test_native_telemetry_with_iso_time_and_offset() -> None:
    raw = payload({"ts": "2026-11-29T09:02:03.456+08:00", "metrics": {"battery": 81}})
    (reading,) = decode(TELEMETRY, raw, NOW).readings
    assert reading.ts == NOW
    assert reading.seq is None


def test_booleans_become_numbers() -> None:
    raw = payload({"ts": NOW_MS, "metrics": {"worn": True}})
    assert decode(TELEMETRY, raw, NOW).readings[0].value == 1.0


def test_event_and_status() -> None:
    raw = payload({"ts": NOW_MS, "seq": 7, "event": "fall_detected", "data": {"confidence": 0.93}})
    event = decode(parse_topic("community/c1/wearable/w1/event"), raw, NOW).event
    assert event is not None
    assert (event.event, event.data, event.seq, event.ts) == (
        "fall_detected",
        {"confidence": 0.93},
        7,
        NOW,
    )
    status = decode(parse_topic("community/c1/wearable/w1/status"), b'{"online": false}', NOW)
    assert status.status is not None
    assert (status.status.online, status.status.ts) == (False, NOW)


# -- SenML (RFC 8428) ------------------------------------------------------------


def test_rfc8428_example_5_1_1_resolves() -> None:
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "u": "A", "v": 1.2},
    ]
    records = resolve_pack(pack, now=NOW.timestamp())
    assert [(r.name, r.unit, r.value) for r in records] == [
        ("urn:dev:ow:10e2073a01080063:voltage", "V", 120.1),
        ("urn:dev:ow:10e2073a01080063:current", "A", 1.2),
    ]
    # No time at all means "now" (RFC 8428 §4.5.3).
    assert all(r.relative and r.time == NOW.timestamp() for r in records)


def test_rfc8428_example_5_1_2_multiple_datapoints() -> None:
    pack = [
        {
            "bn": "urn:dev:ow:10e2073a0108006:",
            "bt": 1.276020076001e09,
            "bu": "A",
            "bver": 5,
            "n": "voltage",
            "u": "V",
            "v": 120.1,
        },
        {"n": "current", "t": -5, "v": 1.2},
        {"n": "current", "t": -4, "v": 1.3},
        {"n": "current", "t": -3, "v": 1.4},
        {"n": "current", "t": -2, "v": 1.5},
        {"n": "current", "t": -1, "v": 1.6},
        {"n": "current", "v": 1.7},
    ]
    records = resolve_pack(pack, now=NOW.timestamp())
    assert records[0].unit == "V"
    currents = records[1:]
    assert [r.unit for r in currents] == ["A"] * 6
    assert [r.value for r in currents] == [1.2, 1.3, 1.4, 1.5, 1.6, 1.7]
    assert [round(r.time, 3) for r in currents] == [
        1276020071.001,
        1276020072.001,
        1276020073.001,
        1276020074.001,
        1276020075.001,
        1276020076.001,
    ]
    assert not any(r.relative for r in records)


def test_rfc8428_example_5_1_5_mixed_value_types() -> None:
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temp", "u": "Cel", "v": 23.1},
        {"n": "label", "vs": "Machine Room"},
        {"n": "open", "vb": False},
        {"n": "nfc-reader", "vd": "aGkgCg"},
    ]
    records = resolve_pack(pack, now=NOW.timestamp())
    assert [(r.kind, r.value) for r in records] == [
        ("v", 23.1),
        ("vs", "Machine Room"),
        ("vb", False),
        ("vd", "aGkgCg"),
    ]


def test_senml_pack_becomes_readings_of_the_topic_device() -> None:
    raw = payload(
        [
            {"bn": "urn:dev:mac:0024befffe804ff1:", "bt": NOW.timestamp() - 60},
            {"n": "heart_rate", "u": "beat/min", "v": 70},
            {"n": "spo2", "u": "%", "v": 98, "t": 30},
            {"n": "worn", "vb": True, "t": 30},
        ]
    )
    readings = decode(TELEMETRY, raw, NOW).readings
    assert [(r.device_id, r.metric, r.value) for r in readings] == [
        ("w1", "heart_rate", 70.0),
        ("w1", "spo2", 98.0),
        ("w1", "worn", 1.0),
    ]
    assert readings[0].ts == NOW - timedelta(seconds=60)
    assert readings[1].ts == NOW - timedelta(seconds=30)


def test_senml_relative_time_uses_receive_time() -> None:
    raw = payload([{"n": "heart_rate", "v": 70, "t": -10}])
    (reading,) = decode(TELEMETRY, raw, NOW).readings
    assert reading.ts == NOW - timedelta(seconds=10)


# -- every rejection reason -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", RejectReason.BAD_JSON),
        (b"", RejectReason.BAD_JSON),
        (b"\xff\xfe", RejectReason.BAD_JSON),
        (b'{"ts": %d, "metrics": {"heart_rate": NaN}}' % NOW_MS, RejectReason.NOT_FINITE),
        (b'{"ts": %d, "metrics": {"heart_rate": 1e400}}' % NOW_MS, RejectReason.NOT_FINITE),
        (payload({"ts": NOW_MS, "metrics": {"heart_rate": 400}}), RejectReason.OUT_OF_RANGE),
        (payload({"ts": NOW_MS, "metrics": {"spo2": -1}}), RejectReason.OUT_OF_RANGE),
        (payload({"ts": NOW_MS, "metrics": {"gas_lel": 5}}), RejectReason.UNKNOWN_METRIC),
        (payload({"ts": NOW_MS, "metrics": {"heart_rate": "72"}}), RejectReason.BAD_PAYLOAD),
        (payload({"ts": NOW_MS, "metrics": {}}), RejectReason.BAD_PAYLOAD),
        (payload({"metrics": {"heart_rate": 70}}), RejectReason.BAD_PAYLOAD),
        (payload({"ts": NOW_MS, "metrics": {"heart_rate": 70}, "x": 1}), RejectReason.BAD_PAYLOAD),
        (
            payload({"ts": "2026-11-29T01:02:03", "metrics": {"battery": 1}}),
            RejectReason.BAD_PAYLOAD,
        ),
        (payload({"ts": NOW_MS // 1000, "metrics": {"battery": 1}}), RejectReason.BAD_PAYLOAD),
        (
            payload({"ts": NOW_MS + 25 * 3600 * 1000, "metrics": {"battery": 1}}),
            RejectReason.FUTURE_TIMESTAMP,
        ),
        (payload([{"n": "heart_rate", "vs": "high"}]), RejectReason.BAD_PAYLOAD),
        (payload([{"n": "heart_rate", "v": 70, "vb": True}]), RejectReason.BAD_PAYLOAD),
        (payload([]), RejectReason.BAD_PAYLOAD),
        (payload([{"n": "heart_rate", "v": 700}]), RejectReason.OUT_OF_RANGE),
        (b'[{"n": "heart_rate", "v": Infinity}]', RejectReason.NOT_FINITE),
        (b'[{"n": "heart_rate", "v": 1}', RejectReason.BAD_JSON),
    ],
)
def test_rejections_carry_their_reason(raw: bytes, reason: RejectReason) -> None:
    assert rejected("community/c1/wearable/w1/telemetry", raw).reason is reason


def test_oversized_payload() -> None:
    raw = payload({"ts": NOW_MS, "metrics": {"heart_rate": 70}, "pad": "x" * 200})
    error = rejected("community/c1/wearable/w1/telemetry", raw, Limits(max_payload_bytes=100))
    assert error.reason is RejectReason.PAYLOAD_TOO_LARGE
    assert str(len(raw)) in error.detail


def test_metric_of_another_class_is_unknown() -> None:
    raw = payload({"ts": NOW_MS, "metrics": {"heart_rate": 70}})
    with pytest.raises(RejectedMessage) as info:
        decode(FIRE, raw, NOW)
    assert info.value.reason is RejectReason.UNKNOWN_METRIC


def test_event_and_status_rejections() -> None:
    event_topic = "community/c1/wearable/w1/event"
    assert rejected(event_topic, payload({"ts": NOW_MS, "event": "Fall!"})).reason is (
        RejectReason.BAD_PAYLOAD
    )
    status_topic = "community/c1/wearable/w1/status"
    assert rejected(status_topic, payload({"online": "yes"})).reason is RejectReason.BAD_PAYLOAD


# -- hostile inputs: each once crashed or slipped past decode (issue 13) -------------


@pytest.mark.parametrize(
    ("topic_str", "raw", "reason"),
    [
        # 400-digit value: once OverflowError in float().
        (
            TELEMETRY_TOPIC,
            b'{"ts": %d, "metrics": {"battery": %s}}' % (NOW_MS, b"9" * 400),
            "out_of_range",
        ),
        # seq past bigint: once accepted, then killed the commit thread in COPY.
        (
            TELEMETRY_TOPIC,
            payload({"ts": NOW_MS, "seq": 2**63, "metrics": {"battery": 1}}),
            "bad_payload",
        ),
        # Timestamps datetime cannot hold: once OverflowError / ValueError.
        (
            TELEMETRY_TOPIC,
            b'{"ts": %s, "metrics": {"battery": 1}}' % (b"9" * 400),
            "future_timestamp",
        ),
        (
            TELEMETRY_TOPIC,
            payload({"ts": "0001-01-01T00:00:00+14:00", "metrics": {"battery": 1}}),
            "bad_payload",
        ),
        (
            TELEMETRY_TOPIC,
            payload({"ts": "9999-12-31T23:59:59-14:00", "metrics": {"battery": 1}}),
            "future_timestamp",
        ),
        (
            TELEMETRY_TOPIC,
            payload([{"bt": 1e308, "t": 1e308, "n": "battery", "v": 1}]),
            "out_of_range",
        ),
        (TELEMETRY_TOPIC, payload([{"bt": 10**400, "n": "battery", "v": 1}]), "out_of_range"),
        (TELEMETRY_TOPIC, payload([{"bt": 1e15, "n": "battery", "v": 1}]), "future_timestamp"),
        (TELEMETRY_TOPIC, payload([{"bt": -1e15, "n": "battery", "v": 1}]), "bad_payload"),
        (TELEMETRY_TOPIC, payload([{"n": "battery", "v": 10**400}]), "out_of_range"),
        # Deep nesting: once RecursionError in the NaN-refining parser.
        (TELEMETRY_TOPIC, b"[" * 30_000 + b"]" * 30_000, "too_deep"),
        (
            EVENT_TOPIC,
            b'{"ts": 1, "event": "x", "data": ' + b"[" * 50 + b"]" * 50 + b"}",
            "too_deep",
        ),
        (TELEMETRY_TOPIC, payload([{"n": "x" * 5000, "v": 1}]), "string_too_long"),
        (
            EVENT_TOPIC,
            payload({"ts": NOW_MS, "event": "sos_pressed", "data": {"k": "x" * 5000}}),
            "string_too_long",
        ),
        (
            EVENT_TOPIC,
            payload({"ts": NOW_MS, "event": "sos_pressed", "data": {"k": list(range(2000))}}),
            "too_many_values",
        ),
        (TELEMETRY_TOPIC, payload([{"n": "battery", "v": 1}] * 1001), "too_many_values"),
        (
            TELEMETRY_TOPIC,
            payload({"ts": NOW_MS, "metrics": {f"m{i}": 1 for i in range(65)}}),
            "bad_payload",
        ),
        (TELEMETRY_TOPIC, b'{"ts": 1, "metrics": {"battery": "\\ud800"}}', "bad_json"),
        (TELEMETRY_TOPIC, b"\xff\xfe{}", "bad_json"),
    ],
)
def test_hostile_payloads_are_refused_with_their_reason(
    topic_str: str, raw: bytes, reason: str
) -> None:
    assert rejected(topic_str, raw).reason.value == reason


def test_hostile_topics_are_refused() -> None:
    for topic in ("community/" + "a" * 300 + "/wearable/w/telemetry", "community/" + "a/" * 5000):
        with pytest.raises(RejectedMessage) as info:
            parse_topic(topic)
        assert info.value.reason is RejectReason.BAD_TOPIC


def test_the_edges_that_fit_are_accepted() -> None:
    raw = payload({"ts": NOW_MS, "seq": 2**63 - 1, "metrics": {"battery": 100, "rssi": -0.0}})
    decoded = decode(TELEMETRY, raw, NOW)
    assert decoded.seq == 2**63 - 1
    assert [r.value for r in decoded.readings] == [100.0, -0.0]


def test_the_readme_lists_every_reject_reason() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    contract = readme[readme.index("### Reject reasons") : readme.index("### When things go wrong")]
    missing = [r.value for r in RejectReason if f"`{r.value}`" not in contract]
    assert missing == []


def test_times_at_the_limits_are_exact() -> None:
    """Compared and converted without float rounding: the edge is in, one ms past is out."""
    day = 86_400_000
    edge = decode(TELEMETRY, payload({"ts": NOW_MS + day, "metrics": {"battery": 1}}), NOW)
    assert edge.readings[0].ts == NOW + timedelta(days=1)
    early = 946_684_800_000  # 2000-01-01T00:00:00Z
    first = decode(TELEMETRY, payload({"ts": early, "metrics": {"battery": 1}}), NOW)
    assert first.readings[0].ts == datetime(2000, 1, 1, tzinfo=UTC)
    for ts, reason in ((NOW_MS + day + 1, "future_timestamp"), (early - 1, "bad_payload")):
        raw = payload({"ts": ts, "metrics": {"battery": 1}})
        assert rejected(TELEMETRY_TOPIC, raw).reason.value == reason
    late = NOW.timestamp() + 86_400 + 1e-6
    raw = payload([{"bt": late, "n": "battery", "v": 1}])
    assert rejected(TELEMETRY_TOPIC, raw).reason.value == "future_timestamp"


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("community/c1/wearable/w1/event", "sos"),  # misspelt: the rule listens for sos_pressed
        ("community/c1/fire/f1/event", "fall_detected"),  # a real event, of another class
    ],
)
def test_an_event_outside_the_class_catalogue_is_unknown_event(topic: str, name: str) -> None:
    exc = rejected(topic, payload({"ts": NOW_MS, "event": name}))
    assert exc.reason is RejectReason.UNKNOWN_EVENT
    assert repr(name) in exc.detail
