"""Simulated devices: catalogue-clean, rhythmic, deterministic, and on the topic grammar."""

from __future__ import annotations

import argparse
import math
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from core.metric_catalog import METRICS
from core.models import Device, EventEnvelope, TelemetryEnvelope
from core.topics import Channel, device_topic, parse_topic
from simulators.cli import add_arguments
from simulators.community import demo_devices
from simulators.connection import BrokerAddress
from simulators.devices import build_model
from simulators.fire import FIRE_KINDS
from simulators.fleet import event_payload, telemetry_payload
from simulators.model import COMMUNITY_TZ, DeviceModel, Sample, SimEvent
from simulators.publisher import Simulator
from simulators.rhythm import crossed, poisson
from simulators.stats import SimulationStats

EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# One sample every 5 simulated minutes, as the brief for these tests asks.
STEP = timedelta(minutes=5)
# Local midnight in the community, given as UTC: the models must convert.
MIDNIGHT = datetime(2026, 11, 29, tzinfo=COMMUNITY_TZ).astimezone(UTC)


def fire_device(kind: str, index: int = 1) -> Device:
    spec = FIRE_KINDS[kind]
    return Device(
        id=f"unit-fire-{kind.replace('_', '-')}-{index}",
        community_id="unit",
        device_class="fire",
        model=spec.model,
        expected_interval_s=spec.interval_s,
    )


def roster() -> list[Device]:
    """Every class several times, and every fire sensor kind."""
    return demo_devices(community_id="unit", count=40, seed=7) + [
        fire_device(kind) for kind in FIRE_KINDS
    ]


def walk(model: DeviceModel, *, days: float = 1.0, start: datetime = MIDNIGHT) -> list[Sample]:
    steps = int(days * 24 * 60 / 5)
    return [model.sample(start + STEP * i) for i in range(steps)]


@pytest.mark.parametrize("incident_scale", [1.0, 300.0])
def test_readings_stay_in_the_catalogue_over_days(incident_scale: float) -> None:
    for device in roster():
        catalogue = METRICS[device.device_class]
        model = build_model(device, seed=3, incident_scale=incident_scale)
        for sample in walk(model, days=2):
            assert sample.metrics, device.id
            for name, value in sample.metrics.items():
                spec = catalogue.get(name)
                assert spec is not None, f"{device.id}: {name} is not in the catalogue"
                assert type(value) in (int, float), f"{device.id}: {name}={value!r}"
                assert math.isfinite(value)
                assert spec.low <= value <= spec.high, f"{device.id}: {name}={value}"


def test_events_are_well_formed_and_cover_each_class() -> None:
    seen: dict[str, Counter[str]] = {}
    for device in roster():
        model = build_model(device, seed=3, incident_scale=1_000.0)
        for sample in walk(model, days=2):
            for event in sample.events:
                assert EVENT_NAME.match(event.name), event.name
                assert all(isinstance(v, str | int | float) for v in event.data.values())
                orjson.dumps(event.data)  # the data must be JSON
                seen.setdefault(device.device_class, Counter())[event.name] += 1
    assert {"fall_detected", "sos_pressed", "geofence_exit"} <= set(seen["wearable"])
    assert {"smoke_alarm", "fault", "self_test", "alarm_cleared"} <= set(seen["fire"])
    assert {"parcel_deposited", "parcel_picked_up", "door_forced"} <= set(seen["locker"])
    access = {"access_granted", "access_denied", "door_held_open", "door_forced"}
    assert access <= set(seen["access"])


def test_event_names_are_checked() -> None:
    with pytest.raises(ValueError, match="snake_case"):
        SimEvent(name="Fall Detected")


def test_payloads_match_the_gateway_envelopes() -> None:
    device = demo_devices(community_id="unit", count=4, seed=1)[0]
    sample = build_model(device, seed=1).sample(MIDNIGHT)
    telemetry = TelemetryEnvelope.model_validate_json(
        telemetry_payload(ts_ms=1_764_378_123_456, seq=7, metrics=sample.metrics)
    )
    assert telemetry.seq == 7
    assert dict(telemetry.metrics) == sample.metrics
    event = SimEvent(name="access_granted", data={"credential": "card", "door": "north-gate"})
    envelope = EventEnvelope.model_validate_json(
        event_payload(ts_ms=1_764_378_123_457, seq=8, event=event)
    )
    assert envelope.event == "access_granted"
    assert envelope.data == {"credential": "card", "door": "north-gate"}


def test_steps_climb_through_the_day_and_restart_at_local_midnight() -> None:
    device = next(d for d in roster() if d.device_class == "wearable")
    model = build_model(device, seed=11)
    start = MIDNIGHT + timedelta(hours=12)  # noon local: the next midnight is mid-walk
    times = [start + STEP * i for i in range(3 * 24 * 12)]
    previous: tuple[datetime, float] | None = None
    resets = 0
    for when in times:
        steps = model.sample(when).metrics["steps"]
        local_day = when.astimezone(COMMUNITY_TZ).date()
        if previous is not None:
            if local_day == previous[0].astimezone(COMMUNITY_TZ).date():
                assert steps >= previous[1]
            else:
                resets += 1
                assert steps < previous[1]
        previous = (when, steps)
    assert resets == 3


def test_vitals_follow_the_day_in_community_time() -> None:
    day_hr: list[float] = []
    night_hr: list[float] = []
    passages = Counter[str]()
    for device in roster():
        model = build_model(device, seed=5, incident_scale=0.0)
        for index, sample in enumerate(walk(model, days=3)):
            hour = (MIDNIGHT + STEP * index).astimezone(COMMUNITY_TZ).hour
            period = "day" if 9 <= hour < 12 else "night" if 1 <= hour < 4 else ""
            if "heart_rate" in sample.metrics and period:
                (day_hr if period == "day" else night_hr).append(sample.metrics["heart_rate"])
            if period:
                passages[period] += sum(e.name == "access_granted" for e in sample.events)
    assert sum(day_hr) / len(day_hr) > sum(night_hr) / len(night_hr) + 5
    assert passages["day"] > 5 * passages["night"]


def test_fire_gauges_sit_in_their_normal_bands_without_incidents() -> None:
    bands = {"hydrant": (0.1, 0.35), "extinguisher": (1.0, 1.4)}
    for kind, (low, high) in bands.items():
        for index in range(10):
            model = build_model(fire_device(kind, index), seed=index, incident_scale=0.0)
            metric = FIRE_KINDS[kind].metric
            assert all(low <= s.metrics[metric] <= high for s in walk(model)), kind


def test_a_seed_replays_exactly_and_another_seed_differs() -> None:
    for device in roster():
        first = walk(build_model(device, seed=42, incident_scale=50.0))
        again = walk(build_model(device, seed=42, incident_scale=50.0))
        other = walk(build_model(device, seed=43, incident_scale=50.0))
        assert first == again, device.id
        assert first != other, device.id


def test_models_refuse_naive_times_and_unknown_classes() -> None:
    device = demo_devices(community_id="unit", count=4, seed=0)[0]
    with pytest.raises(ValueError, match="timezone-aware"):
        build_model(device, seed=0).sample(datetime(2026, 11, 29))  # noqa: DTZ001
    robot = device.model_copy(update={"device_class": "robot"})
    with pytest.raises(ValueError, match="no simulator"):
        build_model(robot, seed=0)


@pytest.mark.parametrize("count", [0, 1, 3, 4, 10, 101, 1000])
def test_demo_roster_counts_mix_and_ids(count: int) -> None:
    devices = demo_devices(community_id="cm-01", count=count, seed=9)
    assert len(devices) == count
    assert len({d.id for d in devices}) == count
    classes = Counter(d.device_class for d in devices)
    if count >= 4:
        assert set(classes) == set(METRICS)
    for device in devices:
        assert re.fullmatch(r"cm-01-(wear|fire|door|lock)-\d{4}", device.id)
        assert device.model
        assert device.name
        assert device.expected_interval_s > 0
        for channel in Channel:
            topic = device_topic(device.community_id, device.device_class, device.id, channel)
            assert parse_topic(topic).device_id == device.id
    if count == 1000:
        assert classes == {"wearable": 400, "fire": 300, "access": 150, "locker": 150}


def test_demo_roster_is_stable_and_the_seed_only_picks_fire_kinds() -> None:
    first = demo_devices(community_id="cm", count=50, seed=1)
    assert first == demo_devices(community_id="cm", count=50, seed=1)
    other = demo_devices(community_id="cm", count=50, seed=2)
    assert [d.id for d in first] == [d.id for d in other]
    assert [d.model for d in first] != [d.model for d in other]
    assert demo_devices(community_id="cm", count=5, seed=1)[0].id == "cm-wear-0001"


def test_crossed_fires_once_a_day() -> None:
    times = [MIDNIGHT + STEP * i for i in range(3 * 24 * 12)]
    hits = [crossed(t.astimezone(COMMUNITY_TZ), 300, at_hour=7.3) for t in times]
    assert sum(hits) == 3


def test_poisson_mean_is_lambda() -> None:
    rng = random.Random(1)
    for lam in (0.2, 4.0, 80.0):
        mean = sum(poisson(rng, lam) for _ in range(20_000)) / 20_000
        assert mean == pytest.approx(lam, rel=0.05)


def test_broker_url_parsing() -> None:
    address = BrokerAddress.parse("mqtt://sim%40x:p%3Ass@broker.local:1884")
    assert (address.host, address.port, address.username) == ("broker.local", 1884, "sim@x")
    assert address.password == "p:ss"
    assert "p:ss" not in repr(address)
    assert BrokerAddress.parse("tcp://127.0.0.1").port == 1883
    for bad in ("http://host:1883", "mqtt://", "mqtt://host:notaport"):
        with pytest.raises(ValueError):
            BrokerAddress.parse(bad)


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--devices", "10", "--rate", "max", "--duration", "2"])
    assert (args.devices, args.rate, args.duration) == (10, math.inf, 2.0)
    defaults = parser.parse_args([])
    assert (defaults.rate, defaults.mqtt_url, defaults.community) == (None, None, "demo")
    for bad in (["--rate", "0"], ["--devices", "0"], ["--duration", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_simulator_checks_its_arguments_before_connecting() -> None:
    devices = demo_devices(community_id="unit", count=300, seed=0)
    url = "mqtt://127.0.0.1:1"  # never dialled: every case fails first
    with pytest.raises(ValueError, match="no devices"):
        Simulator(devices=[], mqtt_url=url)
    with pytest.raises(ValueError, match="rate"):
        Simulator(devices=devices, mqtt_url=url, rate=0)
    with pytest.raises(ValueError, match="per-device"):
        Simulator(devices=devices, mqtt_url=url, per_device_connections=True)
    with pytest.raises(ValueError, match="MQTT URL"):
        Simulator(devices=devices, mqtt_url="http://127.0.0.1")
    realistic = Simulator(devices=devices[:2], mqtt_url=url)
    expected = sum(1 / d.expected_interval_s for d in devices[:2])
    assert realistic.rate == pytest.approx(expected)


def test_stats_arithmetic() -> None:
    stats = SimulationStats(
        telemetry=900, events=100, statuses=20, confirmed=1_010, refused=4, elapsed_s=2.0
    )
    assert (stats.sent, stats.unconfirmed, stats.published) == (1_020, 10, 1_006)
    assert stats.rate == 500.0
