"""The simulated day (the week's short variant): a healthy community raises no false
offline alarm, every scripted incident is found, and outside the incidents the alarm
rate stays within EEMUA 191's one per operator per 10 minutes."""

from __future__ import annotations

import pytest

from alerts.pack import default_rules
from smartcommunity.week import WeekReport, run_week


@pytest.fixture(scope="module")
def day() -> WeekReport:
    return run_week(devices=250, days=1, seed=3)


def test_a_simulated_day_is_validated_like_the_pipeline(day: WeekReport) -> None:
    assert day.devices >= 200
    # Every device reported at its own interval all day: about a day's worth each.
    assert day.messages > 0.9 * day.devices * 24  # the slowest report hourly
    assert sum(day.dead_letters.values()) == 0


def test_no_offline_alarm_from_a_healthy_device(day: WeekReport) -> None:
    assert day.healthy_offline() == []


def test_every_scripted_incident_is_found(day: WeekReport) -> None:
    missed = [i.name for i in day.incidents if not i.found]
    assert missed == []
    assert len(day.incidents) >= 9


def test_outside_incidents_the_alarm_rate_is_within_eemua_191(day: WeekReport) -> None:
    figures = day.eemua(day.routine)
    assert figures["average"] <= 1.0
    assert figures["share_above_10"] == 0.0
    assert day.chattering() == []
    assert "EEMUA 191 per operator per 10 min" in day.render()


def test_an_incident_without_its_rule_is_reported_missed() -> None:
    # The control: take the clock-skew rule away and its incident is missed.
    rules = [r for r in default_rules() if r.id != "device.clock_skew"]
    report = run_week(devices=60, days=1, seed=3, rules=rules)
    missed = {i.name for i in report.incidents if not i.found}
    assert missed == {"clock 3 h fast"}
    assert "MISSED" in report.render()
