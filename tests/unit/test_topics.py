from __future__ import annotations

import pytest

from core.errors import RejectedMessage, RejectReason
from core.topics import Channel, DeviceTopic, alert_topic, device_filter, device_topic, parse_topic


def test_round_trip() -> None:
    topic = device_topic("c-01", "wearable", "w.0001", "telemetry")
    assert topic == "community/c-01/wearable/w.0001/telemetry"
    assert parse_topic(topic) == DeviceTopic("c-01", "wearable", "w.0001", Channel.TELEMETRY)
    assert str(parse_topic(topic)) == topic


@pytest.mark.parametrize("channel", ["telemetry", "event", "status"])
def test_every_channel_parses(channel: str) -> None:
    assert parse_topic(f"community/c/fire/d/{channel}").channel == Channel(channel)


@pytest.mark.parametrize(
    "topic",
    [
        "community/c/fire/d",  # too short
        "community/c/fire/d/telemetry/extra",  # too long
        "city/c/fire/d/telemetry",  # wrong root
        "community/c/fire/d/command",  # unknown channel
        "community//fire/d/telemetry",  # empty segment
        "community/c/fire/d d/telemetry",  # space
        "community/c/fire/-d/telemetry",  # must start alphanumeric
        "/community/c/fire/d/telemetry",  # leading slash
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(RejectedMessage) as info:
        parse_topic(topic)
    assert info.value.reason is RejectReason.BAD_TOPIC


@pytest.mark.parametrize("bad", ["a+b", "a#", "a/b", "", "x" * 65])
def test_builders_refuse_ids_that_break_the_grammar(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        device_topic("c", "fire", bad, "telemetry")


def test_filters_and_alert_topics() -> None:
    assert device_filter("c1", "locker", "L1") == "community/c1/locker/L1/#"
    assert alert_topic("c1", "critical") == "community/c1/alerts/critical"
