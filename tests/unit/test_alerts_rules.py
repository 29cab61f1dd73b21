"""Rules as validated data, and the default pack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.pack import default_rules, load_rules
from core.errors import ConfigurationError
from core.rules import (
    Severity,
    ThresholdRule,
    dump_rule,
    escalated,
    parse_duration,
    parse_rule,
    parse_rules,
)
from tests.rule_samples import HEART_RATE_HIGH

THRESHOLD: dict[str, Any] = {**HEART_RATE_HIGH, "id": "t.one", "title": "T"}


def error_locations(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1.5h", 5400.0),
        ("2d", 172_800.0),
        ("250ms", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "-5s", True, "40d"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_a_threshold_rule_reads_yaml_words_and_round_trips() -> None:
    rule = parse_rule(THRESHOLD)
    assert isinstance(rule, ThresholdRule)
    assert (rule.raise_, rule.clear_level, rule.for_) == (120, 110, 600.0)
    assert parse_rule(dump_rule(rule)) == rule


def test_hysteresis_the_wrong_way_names_the_rule_and_says_why() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rule({**THRESHOLD, "clear": 130})
    assert "clear (130.0) must not be above raise (120.0)" in str(caught.value)
    assert error_locations(caught.value) == [("threshold",)]


def test_a_wrong_field_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rule({**THRESHOLD, "for": "soon"})
    assert error_locations(caught.value) == [("threshold", "for")]
    with pytest.raises(ValidationError) as caught:
        parse_rule({**THRESHOLD, "treshold": 3})
    assert error_locations(caught.value) == [("threshold", "treshold")]
    with pytest.raises(ValidationError) as caught:
        parse_rule({**THRESHOLD, "severity": "urgent"})
    assert error_locations(caught.value) == [("threshold", "severity")]
    with pytest.raises(ValidationError) as caught:
        parse_rule({**THRESHOLD, "type": "magic"})
    assert "type" in str(caught.value)


def test_a_metric_the_class_does_not_report_is_refused() -> None:
    with pytest.raises(ValidationError, match="'gas_lel' is not reported by class 'wearable'"):
        parse_rule({**THRESHOLD, "metric": "gas_lel"})
    with pytest.raises(ValidationError, match="unknown device class"):
        parse_rule({**THRESHOLD, "scope": {"device_class": "toaster"}})


def test_follow_up_needs_something_that_cancels_it() -> None:
    with pytest.raises(ValidationError, match="cancel_if_rises or cancel_events"):
        parse_rule(
            {
                "id": "f",
                "type": "event",
                "title": "F",
                "severity": "critical",
                "events": ["fall_detected"],
                "followup": {"within": "60s"},
            }
        )


def test_lists_of_rules_refuse_duplicate_ids() -> None:
    assert len(parse_rules({"rules": [THRESHOLD]})) == 1
    with pytest.raises(ValidationError, match="appears twice"):
        parse_rules([THRESHOLD, THRESHOLD])


def test_escalation_goes_one_level_up_and_stops_at_critical() -> None:
    assert escalated("minor") is Severity.MAJOR
    assert escalated(Severity.CRITICAL) is Severity.CRITICAL


def test_the_default_pack_covers_the_four_classes_and_every_rule_type() -> None:
    rules = {r.id: r for r in default_rules()}
    by_class = {
        c: [r for r in rules.values() if r.scope.device_class == c]
        for c in ("fire", "locker", "access", "wearable")
    }
    assert all(len(found) >= 5 for found in by_class.values())
    assert {r.type for r in rules.values()} == {
        "threshold",
        "rate_of_change",
        "absence",
        "clock_skew",
        "count",
        "event",
        "correlation",
    }
    for needed in (
        "fire.confirmed",
        "fire.residual_current",
        "fire.hydrant_pressure_low",
        "fire.tank_level_low",
        "fire.gas_stage1",
        "fire.gas_stage2",
        "fire.heat_rate_of_rise",
        "locker.door_forced",
        "locker.door_open_long",
        "locker.parcel_uncollected",
        "locker.power_lost",
        "locker.cold_too_warm",
        "access.door_forced",
        "access.door_held_open",
        "access.repeated_denials",
        "access.tamper",
        "wearable.spo2_low",
        "wearable.heart_rate_high",
        "wearable.heart_rate_low",
        "wearable.fever",
        "wearable.fall",
        "wearable.sos",
        "wearable.geofence_exit",
        "wearable.not_worn",
        "wearable.battery_low",
        "device.offline",
    ):
        assert needed in rules, needed
    residual = rules["fire.residual_current"]
    assert isinstance(residual, ThresholdRule)
    assert 300 <= residual.raise_ <= 500


@pytest.mark.parametrize(
    ("name", "pack", "error"),
    [
        (
            "bad.yaml",
            "rules:\n  - {id: x, type: threshold, title: X, severity: major,"
            " metric: heart_rate, op: '>', raise: 1, for: later}\n",
            r"bad.yaml: rules.0.threshold.for",
        ),
        (
            "sos.yaml",
            "rules:\n  - {id: w.sos, type: event, title: SOS, severity: critical,"
            " scope: {device_class: wearable}, events: [sos]}\n",
            r"sos.yaml: .*event 'sos' is not sent by class",
        ),
    ],
    ids=["a bad field", "an event the class does not send"],
)
def test_a_bad_rule_file_fails_to_load_naming_the_file_and_why(
    tmp_path: Path, name: str, pack: str, error: str
) -> None:
    path = tmp_path / name
    path.write_text(pack)
    with pytest.raises(ConfigurationError, match=error):
        load_rules(path)


@pytest.mark.parametrize(
    "rule",
    [
        # An event of another class, a count rule, a correlation clear and a follow-up cancel.
        {"type": "event", "scope": {"device_class": "fire"}, "events": ["sos_pressed"]},
        {"type": "count", "event": "acces_denied", "threshold": 3, "window": 60},
        {"type": "correlation", "events": ["smoke_alarm"], "window": 60, "clear_events": ["x"]},
        {
            "type": "event",
            "events": ["fall_detected"],
            "followup": {"within": 60, "cancel_events": ["fall_canceled"]},
        },
    ],
)
def test_every_event_a_rule_names_must_be_in_the_catalogue(rule: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="is not sent by"):
        parse_rule({"id": "r", "title": "R", "severity": "major", **rule})
