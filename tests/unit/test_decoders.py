"""Decoder profiles: validation with the file and the field, mapping, replies, ACL lines, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api import exposition
from core.alink import parse_alink_topic, reply_payload, request_id
from core.broker_acl import (
    BrokerDevice,
    ServiceAccount,
    ServiceRole,
    foreign_topics,
    render_acl_file,
)
from core.errors import ConfigurationError, RejectedMessage, RejectReason
from core.observability import PipelineCounters
from gateway.bridge import InboundMessage
from gateway.decoders import load_profiles
from gateway.replies import AlinkReplies
from ingest.batch import DeadLetter
from smartcommunity.cli import main
from smartcommunity.commands.decoders import render, try_profile
from tests.exposition import parse_exposition

SAMPLES = Path(__file__).resolve().parents[2] / "gateway" / "profiles"
HIVEBOX = SAMPLES / "hivebox-locker.yaml"
SMOKE = SAMPLES / "alink-smoke-detector.yaml"
NOW = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_profiles(path)
    return str(caught.value)


def test_the_sample_profiles_load() -> None:
    decoders = load_profiles(SAMPLES)
    assert set(decoders.products) == {"a1ScSmokeDt"}
    assert [p.name for p in decoders.profiles] == ["carewatch-wearable", "hivebox-locker"]
    assert decoders.topic_filters == [
        "/sys/a1ScSmokeDt/+/thing/event/+/post",
        "carewatch/up/+",
        "lockers/hivebox/+/report",
    ]


def test_the_wearable_sample_maps_vitals_and_an_sos_with_its_position() -> None:
    payload = json.dumps(
        {
            "imei": "861234567890123",
            "time": "2026-11-29T09:02:03+08:00",
            "hr": 72,
            "spo2": 97,
            "gps": {"lat": 31.2304, "lng": 121.4737},
            "alarm": "SOS",
        }
    ).encode()
    decoded = try_profile(
        SAMPLES / "carewatch-wearable.yaml", payload, device="861234567890123", received_at=NOW
    )
    assert [(r.metric, r.value) for r in decoded.readings] == [
        ("heart_rate", 72.0),
        ("spo2", 97.0),
        ("lat", 31.2304),
        ("lon", 121.4737),
    ]
    assert decoded.readings[0].ts == NOW  # 09:02:03 in UTC+8
    assert decoded.event is not None
    assert (decoded.event.event, decoded.event.data) == (
        "sos_pressed",
        {"lat": 31.2304, "lon": 121.4737},
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kind: alink\nproduct_key: k1\ndevice_class: fire\nproperties: {Temp: temprature}\n",
            "p.yaml: properties.Temp: 'temprature' is not a metric of class 'fire'",
        ),
        (
            "kind: alink\nproduct_key: k1\ndevice_class: fire\n"
            "properties: {Temp: {metric: temperature, unit: degF}}\n",
            "stored in 'Cel', not 'degF'",
        ),
        (
            "kind: alink\nproduct_key: k1\ndevice_class: fire\nproperties: {T: temperature}\n"
            "events: {Sos: sos_pressed}\n",
            "events.Sos: 'sos_pressed' is not an event of class 'fire'",
        ),
        (
            "kind: json\nname: v\ndevice_class: locker\ntopic: a/b/report\n"
            "metrics: [{path: $.t, metric: temperature}]\n",
            "topic: topic 'a/b/report' needs exactly one {device} level",
        ),
        (
            "kind: json\nname: v\ndevice_class: locker\ntopic: a/{device}\n"
            "metrics: [{path: $.t, metric: temperature, scale: 0}]\n",
            "metrics.0.scale",
        ),
        (
            "kind: json\nname: v\ndevice_class: locker\ntopic: a/{device}\n"
            "metrics: [{path: 'temp', metric: temperature}]\n",
            "metrics.0.path: JSON path 'temp' must start with '$'",
        ),
        (
            "kind: json\nname: v\ndevice_class: locker\ntopic: community/{device}\n"
            "metrics: [{path: $.t, metric: temperature}]\n",
            "belong to the native and Alink contracts",
        ),
        ("kind: mqtt\n", "kind: a profile says `kind: alink` or `kind: json`"),
        (
            "kind: alink\nproduct_key: k1\ndevice_class: fire\n"
            "properties: {T1: temperature, T2: temperature}\n",
            "properties: 'temperature' is mapped more than once",
        ),
        (
            "kind: alink\nproduct_key: k1\ndevice_class: fire\nproperties: {T: temperature}\n"
            "colour: red\n",
            "colour: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_profile_is_refused_with_its_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    message = refusal(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_a_product_key_in_two_files_is_refused(tmp_path: Path) -> None:
    text = "kind: alink\nproduct_key: k1\ndevice_class: fire\nproperties: {T: temperature}\n"
    write(tmp_path, text, "a.yaml")
    write(tmp_path, text, "b.yaml")
    assert "product key 'k1' is also in" in refusal(tmp_path)


def test_a_vendor_payload_maps_to_readings_with_units_and_scale() -> None:
    payload = json.dumps(
        {
            "sn": "HB-1",
            "t": int(NOW.timestamp()),
            "msgNo": 5,
            "env": {"temp": "231", "mains": True},
            "boxes": {"used": 37},
            "event": {"type": "pickup", "box": 4},
        }
    ).encode()
    decoded = try_profile(HIVEBOX, payload, device="HB-1", received_at=NOW)
    assert render(decoded) == [
        {
            "reading": "temperature",
            "device": "HB-1",
            "value": 23.1,
            "ts": NOW.isoformat(),
            "seq": 5,
        },
        {"reading": "mains_power", "device": "HB-1", "value": 1.0, "ts": NOW.isoformat(), "seq": 5},
        {"reading": "occupied", "device": "HB-1", "value": 37.0, "ts": NOW.isoformat(), "seq": 5},
        {
            "event": "parcel_picked_up",
            "device": "HB-1",
            "ts": NOW.isoformat(),
            "seq": 5,
            "data": {"compartment": 4},
        },
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"sn": "HB-1", "t": 1, "env": {"temp": 20}}, RejectReason.BAD_PAYLOAD),  # before 2000
        ({"sn": "HB-1", "env": {"temp": 20}}, RejectReason.BAD_PAYLOAD),  # no time
        ({"sn": "HB-2", "t": 1764378123, "env": {"temp": 20}}, RejectReason.BAD_PAYLOAD),
        ({"sn": "HB-1", "t": 1764378123, "env": {"temp": 9000}}, RejectReason.OUT_OF_RANGE),
        ({"sn": "HB-1", "t": 1764378123, "env": {"temp": [1]}}, RejectReason.BAD_PAYLOAD),
        (
            {"sn": "HB-1", "t": 1764378123, "msgNo": -1, "env": {"temp": 1}},
            RejectReason.BAD_PAYLOAD,
        ),
        ({"sn": "HB-1", "t": 1764378123}, RejectReason.BAD_PAYLOAD),  # nothing to store
    ],
)
def test_a_vendor_payload_that_cannot_be_stored_is_refused_with_a_reason(
    payload: dict[str, object], reason: RejectReason
) -> None:
    with pytest.raises(RejectedMessage) as caught:
        try_profile(HIVEBOX, json.dumps(payload).encode(), device="HB-1", received_at=NOW)
    assert caught.value.reason is reason


def test_alink_posts_decode_properties_and_events() -> None:
    post = json.dumps(
        {
            "id": "42",
            "params": {"BatteryVoltage": 362, "RSSI": {"value": -70, "time": 1764378120000}},
        }
    ).encode()
    decoded = try_profile(SMOKE, post, device="s1", received_at=NOW)
    assert [(r.metric, r.value, r.seq) for r in decoded.readings] == [
        ("battery_v", 3.62, 42),
        ("rssi", -70.0, 42),
    ]
    assert decoded.readings[0].ts == NOW  # no time: the time of receipt
    assert decoded.readings[1].ts == datetime.fromtimestamp(1764378120, UTC)
    event = json.dumps({"id": "43", "params": {"value": {"level": 2}}}).encode()
    decoded = try_profile(SMOKE, event, device="s1", event="SmokeAlarm", received_at=NOW)
    assert decoded.event is not None
    assert (decoded.event.event, decoded.event.data) == ("smoke_alarm", {"level": 2})
    wrong = json.dumps({"id": "1", "params": {}, "method": "thing.event.Fault.post"}).encode()
    with pytest.raises(RejectedMessage, match="does not match the topic"):
        try_profile(SMOKE, wrong, device="s1", received_at=NOW)


def test_replies_say_200_after_commit_and_the_reason_for_a_dead_letter() -> None:
    sent: list[tuple[str, bytes]] = []

    def publish(topic: str, body: bytes) -> bool:
        sent.append((topic, body))
        return True

    counters = PipelineCounters()
    replies = AlinkReplies(publish, counters)
    good = InboundMessage("/sys/k1/d1/thing/event/property/post", b'{"id":"5"}', 1, 1, 0.0, 1)
    bad = InboundMessage("/sys/k1/d1/thing/event/Fault/post", b'{"id":"6",', 1, 2, 0.0, 1)
    quiet = InboundMessage(
        "/sys/k1/d1/thing/event/property/post", b'{"id":"7","sys":{"ack":0}}', 1, 3, 0.0, 1
    )
    native = InboundMessage("community/c/fire/d1/telemetry", b"{}", 1, 4, 0.0, 1)
    letter = DeadLetter(bad.topic, bad.payload, "bad_json", "payload is not valid JSON", NOW)
    replies([good, bad, quiet, native], [letter])
    assert [(t, json.loads(b)) for t, b in sent] == [
        (
            good.topic + "_reply",
            {
                "id": "5",
                "code": 200,
                "data": {},
                "message": "success",
                "version": "1.0",
                "method": "thing.event.property.post",
            },
        ),
        (
            bad.topic + "_reply",
            {
                "id": "6",
                "code": 460,
                "data": {},
                "message": "bad_json: payload is not valid JSON",
                "version": "1.0",
                "method": "thing.event.Fault.post",
            },
        ),
    ]
    assert replies.sent == 2
    assert counters.snapshot()["alink_replies_total"] == 2
    _, samples = parse_exposition(
        exposition.render(exposition.Figures(workers={"w": counters.snapshot()})).decode()
    )
    assert samples[("sc_pipeline_alink_replies_total", (("worker", "w"),))] == 2


def test_reply_codes_and_request_ids() -> None:
    topic = parse_alink_topic("/sys/k1/d1/thing/event/property/post")
    assert json.loads(reply_payload(topic, "1", RejectReason.UNKNOWN_DEVICE, "x"))["code"] == 403
    assert json.loads(reply_payload(topic, "1", RejectReason.DATABASE_REFUSED, "x"))["code"] == 500
    assert request_id(b'{"id": "4294967295"}') == "4294967295"
    assert request_id(b'{"id": "4294967296"}') == ""
    assert request_id(b'{"id": 12}') == ""


def test_acl_grants_each_device_its_own_foreign_topics() -> None:
    decoders = load_profiles(SAMPLES)
    foreign = foreign_topics(decoders.products.values(), decoders.profiles)
    devices = [
        BrokerDevice("s1", "c1", "fire", "$7$x"),
        BrokerDevice("HB-1", "c1", "locker", "$7$y"),
        BrokerDevice("w1", "c1", "wearable", "$7$z"),
    ]
    accounts = [ServiceAccount("pipe", ServiceRole.PIPELINE, "$7$p")]
    acl = render_acl_file(devices, accounts, generated_at=NOW, foreign=foreign)
    assert "topic write /sys/a1ScSmokeDt/s1/thing/event/+/post\n" in acl
    assert "topic read /sys/a1ScSmokeDt/s1/thing/event/+/post_reply\n" in acl
    assert "topic write lockers/hivebox/HB-1/report\n" in acl
    assert "topic read /sys/a1ScSmokeDt/+/thing/event/+/post\n" in acl
    assert "topic write /sys/a1ScSmokeDt/+/thing/event/+/post_reply\n" in acl
    assert "topic read lockers/hivebox/+/report\n" in acl
    wearable = acl.split("user w1\n", 1)[1]
    assert "/sys/" not in wearable
    assert "lockers/" not in wearable


def test_the_cli_prints_readings_or_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, json.dumps({"id": "1", "params": {"BatteryPercentage": 80}}), "a.json")
    bad = write(tmp_path, json.dumps({"id": "2", "params": {"BatteryPercentage": 180}}), "b.json")
    assert main(["decoders", "try", str(SMOKE), str(good)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["reading"], line["value"], line["device"]) == ("battery", 80.0, "device-1")
    assert main(["decoders", "try", str(SMOKE), str(bad)]) == 1
    assert capsys.readouterr().out.startswith("rejected: out_of_range: battery=180")
    assert main(["decoders", "check", str(SAMPLES)]) == 0
    assert "alink a1ScSmokeDt: class fire" in capsys.readouterr().out
