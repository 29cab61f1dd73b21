"""Each rule type, driven by a controllable clock: no broker, no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from alerts.engine import Engine
from alerts.model import AlertChange, ChangeKind, DeviceInfo, Observations, observations
from alerts.state import EngineState
from alerts.store import coalesce
from core.models import DeviceEvent, Reading
from core.rules import Rule, parse_rule
from tests.rule_samples import HEART_RATE_HIGH

# 10:00 in Shanghai.
T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC).timestamp()
MIN = 60.0


def device(
    device_id: str,
    device_class: str = "wearable",
    *,
    building: str | None = None,
    interval: float = 600,
    community: str = "c1",
) -> DeviceInfo:
    return DeviceInfo(device_id, community, device_class, interval, building)


DEVICES = {
    d.device_id: d
    for d in (
        device("w1"),
        device("w2"),
        device("h1", "fire", building="3"),
        device("s1", "fire", building="3"),
        device("s2", "fire", building="3"),
        device("s3", "fire", building="4"),
        device("s4", "fire"),
        device("d1", "access", interval=60),
        device("d2", "access", interval=60),
    )
}


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def batch(
    readings: list[tuple[str, str, float, float]] = (),  # type: ignore[assignment]
    events: list[tuple[str, str, float, dict[str, Any]]] = (),  # type: ignore[assignment]
) -> Observations:
    items: list[tuple[str, list[Reading], DeviceEvent | None]] = []
    for device_id, metric, ts, value in readings:
        items.append((device_id, [Reading(device_id, metric, at(ts), value, None, at(ts))], None))
    for device_id, name, ts, data in events:
        items.append((device_id, [], DeviceEvent(device_id, name, at(ts), data, None, at(ts))))
    return observations(items, DEVICES)


class Harness:
    """An engine, its state and a clock the test moves."""

    def __init__(self, *rules: dict[str, Any]) -> None:
        self.rules: list[Rule] = [parse_rule(r) for r in rules]
        self.engine = Engine(self.rules, DEVICES)
        self.state = EngineState()

    def feed(
        self,
        now: float,
        readings: list[tuple[str, str, float, float]] | None = None,
        events: list[tuple[str, str, float, dict[str, Any]]] | None = None,
    ) -> list[AlertChange]:
        changes, self.state = self.engine.evaluate(
            batch(readings or [], events or []), self.state, now
        )
        return changes

    def tick(self, now: float) -> list[AlertChange]:
        changes, self.state = self.engine.tick(self.state, now)
        return changes


def kinds(changes: list[AlertChange]) -> list[tuple[str, str, str]]:
    return [(c.kind.value, c.subject, c.severity.value) for c in changes]


HR_HIGH = HEART_RATE_HIGH


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


FALL = {
    "id": "fall",
    "type": "event",
    "title": "Fall with no movement",
    "severity": "critical",
    "scope": {"device_class": "wearable"},
    "events": ["fall_detected"],
    "followup": {"within": "60s", "cancel_if_rises": "steps", "otherwise": "minor"},
}


class TestEvent:
    SOS: ClassVar[dict[str, Any]] = {
        "id": "sos",
        "type": "event",
        "title": "SOS",
        "severity": "critical",
        "events": ["sos_pressed"],
        "auto_resolve": False,
    }

    def test_sos_raises_at_once_and_again_when_pressed_again(self) -> None:
        h = Harness(self.SOS)
        first = h.feed(T0, events=[("w1", "sos_pressed", T0, {"button": "side"})])
        assert kinds(first) == [("raise", "device:w1", "critical")]
        assert first[0].details == {"event": "sos_pressed", "button": "side"}
        assert h.feed(T0 + 1, events=[("w1", "sos_pressed", T0, {})]) == []  # redelivered
        assert len(h.feed(T0 + 30, events=[("w1", "sos_pressed", T0 + 30, {})])) == 1

    def test_where_filters_event_data_and_clear_events_end_it(self) -> None:
        h = Harness(
            {
                "id": "smoke",
                "type": "event",
                "title": "Smoke",
                "severity": "major",
                "events": ["smoke_alarm"],
                "where": {"value": {"ge": 3}},
                "clear_events": ["alarm_cleared"],
            }
        )
        assert h.feed(T0, events=[("s1", "smoke_alarm", T0, {"value": 1})]) == []
        assert len(h.feed(T0 + 1, events=[("s1", "smoke_alarm", T0 + 1, {"value": 5})])) == 1
        other = {"alarm": "fault"}
        assert h.feed(T0 + 2, events=[("s1", "alarm_cleared", T0 + 2, other)]) == []
        cleared = h.feed(T0 + 3, events=[("s1", "alarm_cleared", T0 + 3, {"alarm": "smoke_alarm"})])
        assert kinds(cleared) == [("clear", "device:s1", "major")]

    def test_fall_and_no_movement_for_sixty_seconds(self) -> None:
        h = Harness(FALL)
        h.feed(T0 - 300, [("w1", "steps", T0 - 300, 1200)])
        assert h.feed(T0, events=[("w1", "fall_detected", T0, {"confidence": 0.9})]) == []
        h.feed(T0 + 30, [("w1", "steps", T0 + 30, 1200)])  # no new steps
        assert h.tick(T0 + 59) == []
        raised = h.tick(T0 + 60)
        assert kinds(raised) == [("raise", "device:w1", "critical")]
        assert raised[0].details["confidence"] == 0.9
        assert h.tick(T0 + 120) == []

    def test_fall_then_movement_is_the_lesser_alert(self) -> None:
        h = Harness(FALL)
        h.feed(T0 - 300, [("w1", "steps", T0 - 300, 1200)])
        h.feed(T0, events=[("w1", "fall_detected", T0, {})])
        moved = h.feed(T0 + 20, [("w1", "steps", T0 + 20, 1215)])
        assert kinds(moved) == [("raise", "device:w1", "minor")]
        assert h.tick(T0 + 61) == []


FIRE = {
    "id": "fire",
    "type": "correlation",
    "title": "Confirmed fire",
    "severity": "critical",
    "single_severity": "major",
    "single_title": "Fire pre-alarm: verify",
    "events": ["smoke_alarm", "heat_alarm"],
    "window": "120s",
    "auto_resolve": False,
}


class TestCorrelation:
    def test_two_detectors_in_one_building_confirm_one_alone_is_a_pre_alarm(self) -> None:
        h = Harness(FIRE)
        pre = h.feed(T0, events=[("s1", "smoke_alarm", T0, {})])
        assert kinds(pre) == [("raise", "building:c1/3", "major")]
        assert pre[0].title == "Fire pre-alarm: verify"
        assert h.feed(T0 + 10, events=[("s1", "smoke_alarm", T0 + 10, {})]) == []  # same one
        other = h.feed(T0 + 20, events=[("s3", "smoke_alarm", T0 + 20, {})])  # building 4
        assert kinds(other) == [("raise", "building:c1/4", "major")]
        confirmed = h.feed(T0 + 100, events=[("h1", "heat_alarm", T0 + 100, {})])
        assert kinds(confirmed) == [("raise", "building:c1/3", "critical")]
        assert confirmed[0].details["devices"] == ["h1", "s1"]

    def test_outside_the_window_they_are_not_independent_confirmation(self) -> None:
        h = Harness(FIRE)
        h.feed(T0, events=[("s1", "smoke_alarm", T0, {})])
        late = h.feed(T0 + 200, events=[("s2", "smoke_alarm", T0 + 200, {})])
        assert kinds(late) == [("raise", "building:c1/3", "major")]

    def test_devices_without_a_building_correlate_across_the_community(self) -> None:
        h = Harness(FIRE)
        h.feed(T0, events=[("s4", "smoke_alarm", T0, {})])
        assert kinds(h.feed(T0 + 5, events=[("w1", "smoke_alarm", T0 + 5, {})])) == [
            ("raise", "community:c1", "critical")
        ]


class TestSchedule:
    NIGHT_DOOR: ClassVar[dict[str, Any]] = {
        "id": "door.night",
        "type": "threshold",
        "title": "Door opened at night",
        "severity": "major",
        "scope": {"device_class": "access"},
        "metric": "door_open",
        "op": ">=",
        "raise": 1,
        "schedule": {"start": "22:00", "end": "06:00"},
    }

    def local(self, hour: int, minute: int = 0) -> float:
        # Shanghai is UTC+8; T0 is 10:00 there.
        return T0 + ((hour - 10) % 24) * 3600 + minute * 60

    def test_only_inside_the_window_in_community_time(self) -> None:
        h = Harness(self.NIGHT_DOOR)
        noon = self.local(12)
        assert h.feed(noon, [("d1", "door_open", noon, 1)]) == []
        night = self.local(23)
        assert kinds(h.feed(night, [("d1", "door_open", night, 1)])) == [
            ("raise", "device:d1", "major")
        ]
        assert kinds(h.tick(self.local(6, 1))) == [("clear", "device:d1", "major")]

    def test_out_of_bed_for_45_minutes_at_night(self) -> None:
        # No bed sensor class exists yet: the rule reads a wearable metric.
        h = Harness(
            {
                "id": "bed",
                "type": "threshold",
                "title": "Out of bed > 45 min at night",
                "severity": "major",
                "metric": "worn",
                "op": "<",
                "raise": 0.5,
                "for": "45m",
                "schedule": {"start": "22:00", "end": "06:00"},
            }
        )
        evening = self.local(21, 40)
        h.feed(evening, [("w1", "worn", evening, 0)])  # before the window: nothing
        start = self.local(22, 10)
        h.feed(start, [("w1", "worn", start, 0)])
        assert h.tick(self.local(22, 54)) == []
        assert kinds(h.tick(self.local(22, 55))) == [("raise", "device:w1", "major")]


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


BATTERY = {
    "id": "bat.low",
    "type": "threshold",
    "title": "Battery low",
    "severity": "warning",
    "scope": {"device_class": "wearable"},
    "metric": "battery",
    "op": "<",
    "raise": 20,
    "clear": 25,
}


class TestAlarmManagement:
    """ISA-18.2 / EEMUA 191: on-delay, off-delay and chattering."""

    def test_a_flapping_metric_is_one_alert_with_occurrences_until_clear_for_the_off_delay(
        self,
    ) -> None:
        h = Harness({**BATTERY, "off_delay": "10m"})
        changes: list[AlertChange] = []
        for k in range(40):  # 5 %, 100 %, 5 %, ... every 10 s for 400 s
            t = T0 + 10 * k
            changes += h.feed(t, [("w1", "battery", t, 5.0 if k % 2 == 0 else 100.0)])
            changes += h.tick(t + 1)
        raises = [c for c in changes if c.kind is ChangeKind.RAISE]
        assert [c.kind for c in changes] == [ChangeKind.RAISE] * len(raises)  # never cleared
        assert len(raises) == 20  # the first and one occurrence per breach that came back
        folded = coalesce(changes)
        assert len(folded) == 1
        assert folded[0].occurrences == 20
        last_clear = T0 + 390  # the last reading was 100 %
        assert h.tick(last_clear + 599) == []
        assert kinds(h.tick(last_clear + 600)) == [("clear", "device:w1", "warning")]

    def test_chattering_is_marked_and_held_open_for_the_hold_time(self) -> None:
        h = Harness({**BATTERY, "chatter": {"transitions": 3, "window": "60s", "hold": "5m"}})
        changes = h.feed(T0, [("w1", "battery", T0, 5.0)])
        changes += h.feed(T0 + 10, [("w1", "battery", T0 + 10, 90.0)])  # clears: no off-delay
        changes += h.feed(T0 + 20, [("w1", "battery", T0 + 20, 5.0)])  # third transition
        assert [c.kind for c in changes] == [ChangeKind.RAISE, ChangeKind.CLEAR, ChangeKind.RAISE]
        assert changes[-1].details.get("chattering") is True
        # Chattering: back in range no longer clears at once, only after the hold time.
        assert h.feed(T0 + 30, [("w1", "battery", T0 + 30, 90.0)]) == []
        assert h.tick(T0 + 30 + 299) == []
        assert kinds(h.tick(T0 + 30 + 300)) == [("clear", "device:w1", "warning")]

    def test_on_delay_in_readings_and_time_ignores_a_single_noisy_reading(self) -> None:
        h = Harness({**BATTERY, "for": "5m", "min_breaches": 3})
        assert h.feed(T0, [("w1", "battery", T0, 5.0)]) == []
        assert h.feed(T0 + 60, [("w1", "battery", T0 + 60, 80.0)]) == []
        assert h.tick(T0 + 3600) == []  # one low reading never fires
        fired = []
        for k in range(3):  # three low readings spanning the 5 minutes
            t = T0 + 4000 + 150 * k
            fired.append(kinds(h.feed(t, [("w1", "battery", t, 12.0)])))
        assert fired == [[], [], [("raise", "device:w1", "warning")]]

    def test_state_with_chatter_history_survives_a_restart(self) -> None:
        h = Harness({**BATTERY, "chatter": {}})
        h.feed(T0, [("w1", "battery", T0, 5.0)])
        h.feed(T0 + 10, [("w1", "battery", T0 + 10, 90.0)])
        rs = h.state.rules["bat.low"]
        upserts, _ = rs.take_changes()
        evaluator = h.engine.evaluators["bat.low"]
        restored = evaluator.entry_from_json(upserts["device:w1"])
        assert restored.flips == [T0, T0 + 10]
        assert not restored.firing


def test_a_threshold_entry_saves_every_field() -> None:
    from dataclasses import fields

    from alerts.threshold import ThresholdEntry

    entry = ThresholdEntry("w1", flips=[T0])
    assert set(entry.to_json()) == {f.name for f in fields(ThresholdEntry)}
    assert ThresholdEntry(**entry.to_json()) == entry


def test_a_rule_that_raises_on_one_message_fails_that_message_only() -> None:
    """The per-message boundary inside the engine: the failing rule still sees every
    other message of the group, other rules see all of them, and the failures name
    the messages (their index in the batch) and the rule."""
    h = Harness(BATTERY, TestEvent.SOS)
    threshold = h.engine.evaluators["bat.low"]
    real = threshold.on_readings

    def fails_on_w2(metric: str, group: Any, rs: Any, ctx: Any) -> None:
        if "w2" in group.device_ids:
            raise ValueError("a bug w2's values trigger")
        real(metric, group, rs, ctx)

    threshold.on_readings = fails_on_w2  # type: ignore[method-assign]
    obs = batch(
        readings=[("w1", "battery", T0, 5), ("w2", "battery", T0, 5)],
        events=[("w2", "sos_pressed", T0, {})],
    )
    changes, h.state = h.engine.evaluate(obs, h.state, T0)
    assert sorted(kinds(changes)) == [
        ("raise", "device:w1", "warning"),
        ("raise", "device:w2", "critical"),  # the SOS of the same device: another rule
    ]
    assert [(f.source, f.rule_id, type(f.error)) for f in obs.failures] == [
        (1, "bat.low", ValueError)
    ]
