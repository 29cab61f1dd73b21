"""Alarm management in the rule engine (ISA-18.2 / EEMUA 191): on-delay, off-delay and
chattering, driven by a controllable clock."""

from __future__ import annotations

from alerts.model import AlertChange, ChangeKind
from alerts.store import coalesce
from tests.unit.engine_harness import (
    BATTERY,
    T0,
    Harness,
    kinds,
)


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
