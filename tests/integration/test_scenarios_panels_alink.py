"""Scenarios with a building fire panel (a UITD over GB/T 26875.3) and Alink devices,
end to end: a fire bridge runs on a free port, the panel's frames go over real TCP
to it, the Alink posts through a real Mosquitto; the pipeline (with the
shipped product profiles), the rule engine and PostgreSQL raise the alerts, and the
checker reads them back from the HTTP API. Two copies with a wrong expectation play
alongside and must fail: the judging bites for both kinds.
"""

from __future__ import annotations

import psycopg
import pytest

from core.settings import DecoderSettings, Settings
from simulators.checker import Outcome
from simulators.scenario import (
    PROFILES_DIR,
    Scenario,
    bind,
    load_scenario,
    shipped_scenarios,
)
from simulators.scenario_run import run_scenario, run_scenarios
from smartcommunity.embedded import EmbeddedBroker, free_port
from smartcommunity.panels import bridge_for_runs, register_with_panels
from tests.integration.scenario_support import ControlRoom, control_room_fixture  # noqa: F401
from tests.integration.support import pipeline_thread

pytestmark = pytest.mark.integration

TIME_SCALE = 2.0


def _wrong(name: str, new_name: str, expect: dict[str, object]) -> Scenario:
    """A shipped scenario with one more expectation, one the platform must not meet."""
    data = load_scenario(shipped_scenarios()[name]).model_dump(mode="json")
    data["name"] = new_name
    data["expect"] = [*data["expect"], expect]
    return Scenario.model_validate(data)


def test_panel_and_alink_scenarios_pass_and_a_wrong_expectation_fails(
    private_broker: EmbeddedBroker,
    control_room: ControlRoom,
    unique_id: str,
) -> None:
    url = control_room.database_url
    shipped = shipped_scenarios()
    scenarios = [
        load_scenario(shipped["panel-fire"]),
        load_scenario(shipped["alink-smoke"]),
        # The panel's alarm is critical at once, never major: this expectation fails.
        _wrong(
            "panel-fire",
            "panel-fire-wrong",
            {
                "rule": "fire.panel_alarm",
                "subject": "device:B3-uitd-01-smoke1",
                "severity": "major",
                "after": "first_detector",
                "within": "10s",
            },
        ),
        # The Alink detectors are in B2: nothing is raised for B1.
        _wrong(
            "alink-smoke",
            "alink-smoke-wrong",
            {
                "rule": "fire.confirmed",
                "subject": "building:B1",
                "after": "first_detector",
                "within": "10s",
            },
        ),
    ]

    # A bridge already running, as `scenario run --fire-bridge HOST:PORT` plays to
    # (test_scenarios.py covers the command starting its own for panel-fire).
    running = bridge_for_runs(Settings(database_url=url, mqtt_url=private_broker.url), unique_id)
    with (
        running as bridge,
        pipeline_thread(
            url,
            private_broker.url,
            f"{unique_id}-pipe",
            "+",
            decoders=DecoderSettings(profiles=PROFILES_DIR),
        ),
    ):
        results = run_scenarios(
            scenarios,
            mqtt_url=private_broker.url,
            time_scale=TIME_SCALE,
            prefix=unique_id,
            fire_bridge=bridge,
            **control_room.run_hooks(register_with_panels),
        )
    tables = "\n\n".join(r.table for r in results)
    print(tables)
    panel, alink, panel_wrong, alink_wrong = results
    assert panel.passed, panel.table
    # Every frame of the panel's incidents was confirmed (after commit), and said so.
    assert panel.verdict is not None
    frames = [(r.rule, r.actual) for r in panel.verdict.rows if r.kind == "frames"]
    assert frames == [("incident fire", "1 confirmed"), ("incident second_detector", "1 confirmed")]
    assert alink.passed, alink.table
    assert not panel_wrong.passed
    assert not alink_wrong.passed
    for wrong, rule, subject in (
        (panel_wrong, "fire.panel_alarm", "device:B3-uitd-01-smoke1"),
        (alink_wrong, "fire.confirmed", "building:B1"),
    ):
        assert wrong.error is None, wrong.table
        assert wrong.verdict is not None
        failed = [r for r in wrong.verdict.rows if r.outcome is Outcome.FAILURE]
        # Only the added expectation fails: the rest of the copy passes as the original.
        assert [(r.kind, r.rule, r.subject, r.actual) for r in failed] == [
            ("expect", rule, subject, "none")
        ], wrong.table
    # The panel's frames were confirmed by the bridge (after commit), none denied.
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT d.id, e.event FROM device_events AS e JOIN devices AS d ON d.id = e.device_id"
            " WHERE d.community_id = %s AND e.event = 'fire_alarm' ORDER BY d.id",
            (panel.bound.community.id,),
        ).fetchall()
        uitd = panel.bound.uitds["B3-uitd-01"]
        assert stored == [
            (uitd.point_id("smoke1"), "fire_alarm"),
            (uitd.point_id("smoke2"), "fire_alarm"),
        ]
        alink_events = conn.execute(
            "SELECT count(*) FROM device_events AS e JOIN devices AS d ON d.id = e.device_id"
            " WHERE d.community_id = %s AND e.event = 'smoke_alarm'",
            (alink.bound.community.id,),
        ).fetchone()
    assert alink_events == (2,)


def test_a_panel_run_whose_fire_bridge_is_not_there_breaks_off_and_says_so(
    fresh_database_url: str,
    private_broker: EmbeddedBroker,
    control_room: ControlRoom,
    unique_id: str,
) -> None:
    bound = bind(load_scenario(shipped_scenarios()["panel-fire"]), f"{unique_id}-panel")
    port = free_port()  # nothing listens there

    result = run_scenario(
        bound,
        mqtt_url=private_broker.url,
        fire_bridge=("127.0.0.1", port),
        **control_room.run_hooks(register_with_panels),
    )
    assert not result.passed
    assert result.error is not None
    assert result.error.startswith(
        f"ServiceUnavailable: fire-bridge unavailable: 127.0.0.1:{port}"
    ), result.error
    assert "ERROR: ServiceUnavailable: fire-bridge unavailable" in result.table
    with psycopg.connect(fresh_database_url) as conn:
        states = conn.execute(
            "SELECT DISTINCT state FROM devices WHERE community_id = %s", (bound.community.id,)
        ).fetchall()
    assert states == [("decommissioned",)]  # the UITD and its points retired too
