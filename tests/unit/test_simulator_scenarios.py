"""Scenario files, their binding to a community, and the checker's verdicts, without servers."""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alerts.pack import default_rules
from core.rules import CorrelationRule, EventRule, Rule
from simulators.checker import AlertRecord, Outcome, Raise, judge, render
from simulators.model import COMMUNITY_TZ
from simulators.player import Player, StepRecord
from simulators.scenario import (
    Scenario,
    ScenarioError,
    Step,
    bind,
    load_scenario,
    parse_seconds,
    shipped_scenarios,
)

SHIPPED = shipped_scenarios()
T0 = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def severities(rule: Rule) -> set[str]:
    """Every severity the rule can raise at (pre-alarms, follow-ups cancelled)."""
    found = {rule.severity.value}
    if isinstance(rule, CorrelationRule) and rule.single_severity:
        found.add(rule.single_severity.value)
    if isinstance(rule, EventRule) and rule.followup and rule.followup.otherwise:
        found.add(rule.followup.otherwise.value)
    return found


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenarios_load_bind_and_name_real_rules(name: str) -> None:
    scenario = load_scenario(SHIPPED[name])
    assert scenario.name == name
    bound = bind(scenario, f"unit-{name}")
    assert bound.cast or bound.uitds
    pack = {rule.id: rule for rule in default_rules()}
    for item in (*scenario.expect, *scenario.forbid):
        rules = [r for rule_id, r in pack.items() if fnmatch.fnmatchcase(rule_id, item.rule)]
        assert rules, f"{name}: no rule {item.rule!r} in the default pack"
        if item.severity is not None:
            assert any(item.severity in severities(r) for r in rules), (name, item)
    for pattern in scenario.allow:
        assert any(fnmatch.fnmatchcase(rule_id, pattern) for rule_id in pack), pattern


def test_a_scenario_plays_the_same_community_under_any_id() -> None:
    scenario = load_scenario(SHIPPED["fire-confirmed"])
    first, second = bind(scenario, "run-a"), bind(scenario, "run-b")
    assert [p.local_id for p in first.cast] == [p.local_id for p in second.cast]
    assert first.subject("building:B3") == "building:run-a/B3"
    assert first.subject("device:B3-2F-smoke-01") == "device:run-a-B3-2F-smoke-01"
    assert first.subject("community") == "community:run-a"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


BASE = """
title: t
community: {buildings: 1, kind: rural, seed: 2}
cast: [B1-1F-door-01]
timeline:
  - {at: 1s, name: go, device: B1-1F-door-01, event: door_forced}
expect:
  - {rule: access.door_forced, subject: "device:B1-1F-door-01", after: go, within: 5s}
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("title: t", "title: t\ncolour: red"), "colour: Extra inputs"),
        (("at: 1s", "at: soon"), "is not a duration"),
        (("cast: [B1-1F-door-01]", "cast: [B9-1F-door-01]"), "no device 'B9-1F-door-01'"),
        (("after: go", "after: nothing"), "no step of that name"),
        (("event: door_forced}", "set: {heart_rate: 1}}"), "not a metric of B1-1F-door-01"),
        (("device: B1-1F-door-01,", "device: B1-1F-lock-01,"), "not in the cast"),
        (("device: B1-1F-door-01,", ""), "exactly one of device or building"),
    ],
)
def test_mistakes_are_errors_that_say_where(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, BASE.replace(*change, 1))
    with pytest.raises(ScenarioError, match=message):
        bind(load_scenario(path), "c")
    assert bind(load_scenario(write(tmp_path, BASE)), "c").cast


def test_durations() -> None:
    assert parse_seconds("90s") == 90
    assert parse_seconds("25h") == 90_000
    assert parse_seconds(2) == 2
    for bad in ("-1s", "soon", True):
        with pytest.raises(ValueError):
            parse_seconds(bad)


def frozen(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def test_models_live_at_the_scenario_time_of_day() -> None:
    bound = bind(load_scenario(SHIPPED["fall-at-night"]), "night")
    for now in (T0, T0 + timedelta(hours=9), T0 + timedelta(hours=20, minutes=5)):
        player = Player(bound, mqtt_url="mqtt://127.0.0.1:1", clock=frozen(now))
        model_time = player.model_time(now)
        local = model_time.astimezone(COMMUNITY_TZ)
        assert (local.hour, local.minute) == (3, 10)
        assert now - timedelta(days=1) < model_time <= now


def alert(rule: str, subject: str, *raises: tuple[float, str], ident: int = 1) -> AlertRecord:
    return AlertRecord(
        id=ident,
        rule_id=rule,
        subject=subject,
        severity=raises[-1][1],
        state="open",
        raised_at=T0 + timedelta(seconds=raises[0][0]),
        raises=tuple(Raise(at=T0 + timedelta(seconds=t), severity=s) for t, s in raises),
    )


def fire_verdict(alerts: list[AlertRecord], *, now_s: float, ended: bool) -> list[Outcome]:
    bound = bind(load_scenario(SHIPPED["fire-confirmed"]), "c")
    steps = [
        StepRecord(index=0, name="first_detector", at=T0 + timedelta(seconds=5)),
        StepRecord(index=1, name="second_detector", at=T0 + timedelta(seconds=50)),
    ]
    verdict = judge(
        bound, alerts, steps, now=T0 + timedelta(seconds=now_s), started=T0, ended=ended
    )
    assert render(bound, verdict, time_scale=1.0).startswith("scenario fire-confirmed")
    return [row.outcome for row in verdict.rows]


def test_checker_passes_a_fire_confirmed_in_time() -> None:
    ok = alert("fire.confirmed", "building:c/B3", (5.2, "major"), (50.3, "critical"))
    assert fire_verdict([ok], now_s=60, ended=True) == [Outcome.SUCCESS] * 3


def test_checker_waits_then_fails_what_never_comes_or_comes_late() -> None:
    assert fire_verdict([], now_s=8, ended=False)[:2] == [Outcome.PENDING, Outcome.PENDING]
    assert fire_verdict([], now_s=70, ended=True)[:2] == [Outcome.FAILURE, Outcome.FAILURE]
    late = alert("fire.confirmed", "building:c/B3", (5.2, "major"), (75.0, "critical"))
    assert fire_verdict([late], now_s=80, ended=True)[:2] == [Outcome.SUCCESS, Outcome.FAILURE]
    # Critical before the second detector: raised for the wrong reason.
    early = alert("fire.confirmed", "building:c/B3", (5.2, "critical"))
    assert fire_verdict([early], now_s=60, ended=True)[1] is Outcome.FAILURE


def test_checker_fails_forbidden_and_unexpected_alerts_but_not_allowed_ones() -> None:
    ok = alert("fire.confirmed", "building:c/B3", (5.2, "major"), (50.3, "critical"))
    forbidden = alert("fire.confirmed", "building:c/B1", (20, "major"), ident=2)
    stray = alert("wearable.sos", "device:c-x", (30, "critical"), ident=3)
    outcomes = fire_verdict([ok, forbidden, stray], now_s=60, ended=True)
    assert outcomes == [Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE, Outcome.FAILURE]
    bound = bind(load_scenario(SHIPPED["quiet-day"]), "q")
    health = alert("device.offline", "device:q-B1-1F-door-01", (30, "minor"))
    verdict = judge(bound, [health], [], now=T0, started=T0, ended=True)
    assert verdict.passed
    assert [r.kind for r in verdict.rows] == ["forbid", "allowed"]


def test_the_fire_scenario_brings_its_responders() -> None:
    from simulators.scenario import ResponderSpec

    scenario = load_scenario(shipped_scenarios()["fire-confirmed"])
    by_id = {r.id: r for r in scenario.responders}
    assert by_id["wang"].on_duty
    assert not by_id["zhao"].on_duty
    assert by_id["li"].leader
    bound = bind(scenario, "c-unit")
    assert bound.responder_id("wang") == "c-unit-wang"
    bad = scenario.model_copy(
        update={
            "responders": (ResponderSpec(id="x", role="guard", team="security", building="B99"),)
        }
    )
    with pytest.raises(ScenarioError, match="no building 'B99'"):
        bind(bad, "c-unit")


DEVICES = """
title: t
community: {buildings: 2, seed: 1}
uitds:
  - {id: B1-uitd-01, building: B1}
alink:
  - {id: B2-alink-01, product: alink-smoke-detector, building: B2}
timeline:
  - {at: 1s, name: fire, device: B1-uitd-01, incident: fire}
  - {at: 2s, name: smoke, device: B2-alink-01, event: smoke_alarm}
expect:
  - {rule: fire.panel_alarm, subject: "device:B1-uitd-01-smoke1", after: fire, within: 5s}
  - {rule: fire.confirmed, subject: "building:B2", after: smoke, within: 5s}
"""


def test_uitds_and_alink_devices_bind_to_ids_of_the_run() -> None:
    scenario = Scenario.model_validate({"name": "d", **yaml.safe_load(DEVICES)})
    bound = bind(scenario, "run-a")
    uitd = bound.uitds["B1-uitd-01"]
    assert uitd.building == "B1"
    assert len(uitd.address) == 6
    assert bind(scenario, "run-b").uitds["B1-uitd-01"].address != uitd.address
    assert bound.subject("device:B1-uitd-01-smoke1") == f"device:{uitd.device_id}-smoke1"
    assert bound.subject("device:B2-alink-01") == "device:run-a-B2-alink-01"
    (alink,) = bound.cast
    assert alink.building == "B2"
    assert bound.products[alink.device.id].product_key == "a1ScSmokeDt"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("building: B1}", "building: B7}"), "uitd B1-uitd-01: no building 'B7'"),
        (("product: alink-smoke-detector", "product: no-such"), "alink B2-alink-01: product"),
        (("incident: fire", "incident: flood"), "timeline.0.incident"),
        (
            ("device: B2-alink-01, event: smoke_alarm", "device: B2-alink-01, incident: fire"),
            "'B2-alink-01' is no uitd",
        ),
        (("incident: fire}", "incident: fire, event: smoke_alarm}"), "incident and nothing else"),
        (("event: smoke_alarm}", "event: smoke_alarm, go: offline}"), "go is for MQTT devices"),
        (("device:B1-uitd-01-smoke1", "device:B1-uitd-01-smoke9"), "no device 'B1-uitd-01-smoke9'"),
        (("{id: B2-alink-01,", "{id: B1-uitd-01,"), "ids must be unique"),
        (("event: smoke_alarm}", "event: heat_alarm}"), "no event for 'heat_alarm'"),
        (("event: smoke_alarm}", "set: {gas_lel: 30}}"), "no property for 'gas_lel'"),
    ],
)
def test_uitd_and_alink_mistakes_are_errors_that_say_where(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, DEVICES.replace(*change, 1))
    with pytest.raises(ScenarioError, match=message):
        bind(load_scenario(path), "c")
    assert bind(load_scenario(write(tmp_path, DEVICES)), "c").uitds


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["at", "device", "building", "incident", "event", "go", "set", "repeat"]),
        st.one_of(
            st.none(),
            st.integers(-3, 3),
            st.text(max_size=10),
            st.sampled_from(["fire", "link_cut", "smoke_alarm", "B1-uitd-01", "offline", "2s"]),
            st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=2),
        ),
    )
)
def test_a_step_is_valid_or_refused_with_a_clear_error(data: dict[str, object]) -> None:
    try:
        step = Step.model_validate(data)
    except ValidationError as exc:
        assert exc.errors()  # noqa: PT017 - the refusal names what is wrong
        return
    assert (step.device is None) != (step.building is None)
    if step.incident is not None:
        assert step.device is not None
        assert step.event is None
        assert not step.set
        assert step.go is None


def test_fire_bridge_option_is_host_and_port() -> None:
    from smartcommunity.commands.scenario import _host_port

    assert _host_port("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert _host_port("bridge.local:9001") == ("bridge.local", 9001)
    for bad in ("9000", ":9000", "host:", "host:0", "host:70000", "host:x"):
        with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
            _host_port(bad)
