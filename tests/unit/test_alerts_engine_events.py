"""Event, correlation and schedule rules, driven by a controllable clock: no broker,
no database."""

from __future__ import annotations

from typing import Any, ClassVar

from tests.unit.engine_harness import (
    BATTERY,
    T0,
    Harness,
    batch,
    kinds,
)

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
