"""Threshold, rate, absence, clock-skew and count rules, and restarts, driven by a
controllable clock: no broker, no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from alerts.model import AlertChange, ChangeKind, Observations, observations
from core.models import Reading
from tests.unit.engine_harness import (
    DEVICES,
    HR_HIGH,
    MIN,
    T0,
    Harness,
    at,
    kinds,
)


class TestThreshold:
    def test_for_duration_fires_at_minute_ten_from_the_clock(self) -> None:
        h = Harness(HR_HIGH)
        assert h.feed(T0, [("w1", "heart_rate", T0, 130)]) == []
        assert h.feed(T0 + 5 * MIN, [("w1", "heart_rate", T0 + 5 * MIN, 125)]) == []
        assert h.tick(T0 + 9.9 * MIN) == []
        fired = h.tick(T0 + 10 * MIN)
        assert kinds(fired) == [("raise", "device:w1", "major")]
        assert fired[0].at == T0 + 10 * MIN
        assert h.tick(T0 + 11 * MIN) == []  # once

    def test_a_normal_reading_restarts_the_timer(self) -> None:
        h = Harness(HR_HIGH)
        h.feed(T0, [("w1", "heart_rate", T0, 130)])
        h.feed(T0 + 5 * MIN, [("w1", "heart_rate", T0 + 5 * MIN, 100)])
        h.feed(T0 + 6 * MIN, [("w1", "heart_rate", T0 + 6 * MIN, 130)])
        assert h.tick(T0 + 12 * MIN) == []  # one breach since minute 6: min_breaches unmet
        h.feed(T0 + 13 * MIN, [("w1", "heart_rate", T0 + 13 * MIN, 131)])
        assert h.tick(T0 + 15.9 * MIN) == []
        assert kinds(h.tick(T0 + 16 * MIN)) == [("raise", "device:w1", "major")]

    def test_hysteresis_holds_between_clear_and_raise_levels(self) -> None:
        h = Harness({**HR_HIGH, "for": 0, "min_breaches": 1, "min_clears": 2})
        assert kinds(h.feed(T0, [("w1", "heart_rate", T0, 125)])) == [
            ("raise", "device:w1", "major")
        ]
        # 115 is under the raise level but above clear: no flapping.
        for k, value in enumerate([115, 121, 118, 105, 112, 104, 103]):
            t = T0 + (k + 1) * MIN
            changes = h.feed(t, [("w1", "heart_rate", t, value)])
            if value == 103:
                assert kinds(changes) == [("clear", "device:w1", "major")]
            else:
                assert changes == [], value

    def test_consecutive_breaches_within_one_batch_are_stepped_in_time_order(self) -> None:
        h = Harness({**HR_HIGH, "for": 0, "min_breaches": 3})
        rows = [("w1", "heart_rate", T0 + k, 130.0) for k in (2, 0, 1)]
        rows.append(("w2", "heart_rate", T0, 130.0))
        assert kinds(h.feed(T0 + 3, rows)) == [("raise", "device:w1", "major")]

    def test_late_readings_do_not_move_timers(self) -> None:
        h = Harness({**HR_HIGH, "for": 0, "min_breaches": 1})
        h.feed(T0, [("w1", "heart_rate", T0, 130)])
        assert h.feed(T0 + 1, [("w1", "heart_rate", T0 - 60, 90)]) == []  # older: ignored

    def test_scope_limits_the_rule(self) -> None:
        h = Harness({**HR_HIGH, "for": 0, "min_breaches": 1, "scope": {"device": "w2"}})
        changes = h.feed(T0, [("w1", "heart_rate", T0, 130), ("w2", "heart_rate", T0, 130)])
        assert kinds(changes) == [("raise", "device:w2", "major")]


class TestRateOfChange:
    RULE: ClassVar[dict[str, Any]] = {
        "id": "heat.ror",
        "type": "rate_of_change",
        "title": "Temperature rising fast",
        "severity": "major",
        "scope": {"device_class": "fire"},
        "metric": "temperature",
        "per_minute": 8,
        "window": "5m",
    }

    def test_rising_faster_than_the_limit_raises_and_a_plateau_clears(self) -> None:
        h = Harness(self.RULE)
        assert h.feed(T0, [("h1", "temperature", T0, 22)]) == []
        assert h.feed(T0 + 60, [("h1", "temperature", T0 + 60, 28)]) == []  # 6 degC/min
        raised = h.feed(T0 + 90, [("h1", "temperature", T0 + 90, 38)])  # 16 over 90 s
        assert kinds(raised) == [("raise", "device:h1", "major")]
        assert raised[0].details["per_minute"] == pytest.approx(10.667, abs=1e-3)
        assert h.feed(T0 + 120, [("h1", "temperature", T0 + 120, 39)]) == []  # 8.5/min
        cleared = h.feed(T0 + 400, [("h1", "temperature", T0 + 400, 39)])
        assert kinds(cleared) == [("clear", "device:h1", "major")]

    def test_falling_direction(self) -> None:
        h = Harness({**self.RULE, "direction": "falling", "per_minute": 2})
        h.feed(T0, [("h1", "temperature", T0, 30)])
        assert kinds(h.feed(T0 + 60, [("h1", "temperature", T0 + 60, 27)])) == [
            ("raise", "device:h1", "major")
        ]


class TestAbsence:
    RULE: ClassVar[dict[str, Any]] = {
        "id": "offline",
        "type": "absence",
        "title": "Device offline",
        "severity": "minor",
        "intervals": 3,
        "min_clears": 2,
    }

    def test_offline_after_n_intervals_and_back_after_two_messages(self) -> None:
        h = Harness(self.RULE)
        h.feed(T0, [("d1", "battery", T0, 90)])
        assert h.tick(T0 + 179) == []
        offline = h.tick(T0 + 181)
        assert kinds(offline) == [("raise", "device:d1", "minor")]
        assert offline[0].at == T0 + 180
        assert h.tick(T0 + 500) == []  # once
        assert h.feed(T0 + 600, [("d1", "battery", T0 + 600, 90)]) == []  # one message: not yet
        back = h.feed(T0 + 660, [("d1", "battery", T0 + 660, 90)])
        assert kinds(back) == [("clear", "device:d1", "minor")]

    def test_old_data_delivered_late_does_not_count_as_alive(self) -> None:
        h = Harness(self.RULE)
        h.feed(T0, [("d1", "battery", T0, 90)])
        h.tick(T0 + 200)
        # Queued readings from before it went silent, received now: still silent since.
        assert h.feed(T0 + 300, [("d1", "battery", T0 + 10, 90)]) == []
        assert h.feed(T0 + 301, [("d1", "battery", T0 + 20, 90)]) == []
        assert h.tick(T0 + 302) == []

    def test_a_device_that_never_reported_is_not_offline(self) -> None:
        h = Harness(self.RULE)
        h.feed(T0, [("d1", "battery", T0, 90)])
        assert [c.subject for c in h.tick(T0 + 10_000)] == ["device:d1"]

    @staticmethod
    def status(h: Harness, now: float, device_id: str, *, online: bool) -> list[AlertChange]:
        changes, h.state = h.engine.evaluate(
            Observations(links={device_id: (online, now)}), h.state, now
        )
        return changes

    def test_a_last_will_raises_after_the_grace_and_a_reconnect_resolves(self) -> None:
        h = Harness(self.RULE)  # default grace 60 s, fire/access/wearable
        h.feed(T0, [("w1", "battery", T0, 90)])  # reports every 10 min
        assert self.status(h, T0 + 5, "w1", online=False) == []
        assert h.tick(T0 + 64) == []
        lost = h.tick(T0 + 66)
        assert kinds(lost) == [("raise", "device:w1", "minor")]
        assert lost[0].at == T0 + 65
        assert lost[0].details["reason"] == "link_lost"
        assert h.tick(T0 + 3000) == []  # once, and silence adds no second alert
        back = self.status(h, T0 + 3001, "w1", online=True)
        assert kinds(back) == [("clear", "device:w1", "minor")]
        assert h.tick(T0 + 3100) == []

    def test_a_reconnect_storm_raises_nothing(self) -> None:
        h = Harness(self.RULE)
        h.feed(T0, [("d1", "battery", T0, 90)])
        changes: list[AlertChange] = []
        for k in range(40):  # link drops and comes back every 20 s for 13 minutes
            t = T0 + 20 * k
            changes += self.status(h, t, "d1", online=False)
            changes += h.tick(t + 10)
            changes += self.status(h, t + 15, "d1", online=True)
            changes += h.feed(t + 16, [("d1", "battery", t + 16, 90)])
            changes += h.tick(t + 19)
        assert changes == []

    def test_data_after_the_will_means_the_link_is_back(self) -> None:
        h = Harness(self.RULE)
        h.feed(T0, [("d1", "battery", T0, 90)])
        self.status(h, T0 + 1, "d1", online=False)
        h.feed(T0 + 30, [("d1", "battery", T0 + 30, 90)])
        assert h.tick(T0 + 100) == []

    def test_link_loss_only_for_the_classes_that_need_it(self) -> None:
        h = Harness({**self.RULE, "link_loss_classes": ["fire"]})
        h.feed(T0, [("w1", "battery", T0, 90), ("s1", "battery_v", T0, 3.5)])
        self.status(h, T0, "w1", online=False)
        self.status(h, T0, "s1", online=False)
        assert [c.subject for c in h.tick(T0 + 61)] == ["device:s1"]

    def test_silence_multiple_per_class(self) -> None:
        h = Harness({**self.RULE, "class_intervals": {"access": 10}})
        h.feed(T0, [("d1", "battery", T0, 90), ("w1", "battery", T0, 90)])
        assert h.tick(T0 + 599) == []  # d1: 10 x 60 s
        assert [c.subject for c in h.tick(T0 + 601)] == ["device:d1"]
        assert [c.subject for c in h.tick(T0 + 1801)] == ["device:w1"]  # w1: 3 x 600 s


class TestClockSkew:
    RULE: ClassVar[dict[str, Any]] = {
        "id": "clock",
        "type": "clock_skew",
        "title": "Clock ahead",
        "severity": "warning",
        "max_ahead": "5m",
    }

    @staticmethod
    def reading(h: Harness, received: float, device_time: float) -> list[AlertChange]:
        r = Reading("w1", "battery", at(device_time), 90, None, at(received))
        changes, h.state = h.engine.evaluate(
            observations([("w1", [r], None)], DEVICES), h.state, received
        )
        return changes

    def test_a_clock_3_h_fast_raises_once_and_recovers_when_fixed(self) -> None:
        h = Harness(self.RULE, TestAbsence.RULE)
        raised = self.reading(h, T0, T0 + 3 * 3600)
        assert kinds(raised) == [("raise", "device:w1", "warning")]
        assert raised[0].details["ahead_s"] == 3 * 3600
        for k in range(1, 10):
            assert self.reading(h, T0 + 60 * k, T0 + 3 * 3600 + 60 * k) == []
        # The fast clock never made the device look fresher than receipt.
        assert h.state.presence.get("w1") == T0 + 540
        cleared = self.reading(h, T0 + 600, T0 + 601)  # fixed: within the 5 s tolerance
        assert kinds(cleared) == [("clear", "device:w1", "warning")]

    def test_a_clock_behind_is_not_skew(self) -> None:
        # Device time behind receipt is also what queued data looks like.
        h = Harness(self.RULE)
        assert self.reading(h, T0 + 3 * 3600, T0) == []


class TestCount:
    RULE: ClassVar[dict[str, Any]] = {
        "id": "denials",
        "type": "count",
        "title": "Repeated access denials",
        "severity": "major",
        "scope": {"device_class": "access"},
        "event": "access_denied",
        "threshold": 5,
        "window": "5m",
        "group_by": "door",
    }

    def test_five_denials_at_one_door_in_five_minutes(self) -> None:
        h = Harness(self.RULE)
        door = {"door": "north-gate"}
        for k in range(4):
            assert h.feed(T0 + k * 50, events=[("d1", "access_denied", T0 + k * 50, door)]) == []
        # Another door of the same controller counts on its own.
        h.feed(T0 + 210, events=[("d1", "access_denied", T0 + 210, {"door": "garage"})])
        fifth = h.feed(T0 + 220, events=[("d1", "access_denied", T0 + 220, door)])
        assert kinds(fifth) == [("raise", "device:d1/door:north-gate", "major")]
        assert fifth[0].details["count"] == 5
        assert h.feed(T0 + 230, events=[("d1", "access_denied", T0 + 230, door)]) == []
        assert h.tick(T0 + 340) == []  # 50, 100, 150, 220, 230: still five
        cleared = h.tick(T0 + 360)
        assert kinds(cleared) == [("clear", "device:d1/door:north-gate", "major")]

    def test_spread_out_denials_do_not_count(self) -> None:
        h = Harness(self.RULE)
        for k in range(10):
            t = T0 + k * 100
            assert h.feed(t, events=[("d1", "access_denied", t, {"door": "x"})]) == []


class TestRestart:
    def test_for_window_started_before_a_restart_fires_at_minute_ten_once(self) -> None:
        h = Harness(HR_HIGH)
        h.feed(T0, [("w1", "heart_rate", T0, 130)])
        h.feed(T0 + 3 * MIN, [("w1", "heart_rate", T0 + 3 * MIN, 128)])
        upserts, removed = h.state.rules["hr.high"].take_changes()
        persisted = [("hr.high", s, data) for s, data in upserts.items()]
        assert not removed

        fresh = Harness(HR_HIGH)
        fresh.engine.restore(fresh.state, persisted, active=[])
        assert fresh.tick(T0 + 9 * MIN) == []
        assert kinds(fresh.tick(T0 + 10 * MIN)) == [("raise", "device:w1", "major")]

        # And after a second restart, the open alert marks it firing: no second raise.
        again = Harness(HR_HIGH)
        again.engine.restore(again.state, [], active=[("hr.high", "device:w1", T0)])
        assert again.tick(T0 + 20 * MIN) == []
        assert again.feed(T0 + 21 * MIN, [("w1", "heart_rate", T0 + 21 * MIN, 135)]) == []
        assert kinds(again.feed(T0 + 22 * MIN, [("w1", "heart_rate", T0 + 22 * MIN, 100)])) == [
            ("clear", "device:w1", "major")
        ]


def test_changes_name_their_rule_and_kind() -> None:
    h = Harness({**HR_HIGH, "for": 0, "min_breaches": 1})
    (change,) = h.feed(T0, [("w1", "heart_rate", T0, 130)])
    assert change.kind is ChangeKind.RAISE
    assert change.rule_id == "hr.high"
    assert change.community_id == "c1"
    assert change.device_id == "w1"


def test_saved_state_is_json_postgresql_takes() -> None:
    import json
    import math

    from alerts.events import EventEntry
    from alerts.store import _clean

    entry = EventEntry("w1")  # last_ts: minus infinity, "never"
    text = json.dumps(_clean(entry.to_json()), allow_nan=False)
    back = EventEntry(**json.loads(text))
    assert back.last_ts < -1e299
    assert not math.isinf(back.last_ts)
    assert _clean({"n": "a\0b"}) == {"n": "a\ufffdb"}


def test_a_clean_goodbye_is_not_a_lost_link() -> None:
    from alerts.listener import link_statuses
    from core.decode import decode
    from core.topics import parse_topic
    from ingest.batch import Accepted

    topic = parse_topic("community/c1/wearable/w1/status")

    def status(payload: bytes, at: float) -> Accepted:
        decoded = decode(topic, payload, datetime.fromtimestamp(at, UTC))
        return Accepted(device_id="w1", topic=str(topic), payload=payload, status=decoded.status)

    will = status(b'{"online": false}', T0)
    goodbye = status(b'{"online": false, "clean": true}', T0 + 1)
    assert link_statuses([will]) == {"w1": (False, T0)}
    assert link_statuses([goodbye]) == {}
    h = Harness(TestAbsence.RULE)
    h.feed(T0, [("w1", "battery", T0, 90)])
    changes, h.state = h.engine.evaluate(
        Observations(links=link_statuses([goodbye])), h.state, T0 + 1
    )
    assert changes == []
    assert h.tick(T0 + 120) == []  # no link-loss alarm after the grace


def test_a_threshold_entry_saves_every_field() -> None:
    from dataclasses import fields

    from alerts.threshold import ThresholdEntry

    entry = ThresholdEntry("w1", flips=[T0])
    assert set(entry.to_json()) == {f.name for f in fields(ThresholdEntry)}
    assert ThresholdEntry(**entry.to_json()) == entry
