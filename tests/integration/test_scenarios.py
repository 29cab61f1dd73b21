"""Every shipped scenario, end to end, exactly as ``smartcommunity scenario run --all`` plays it.

Real Mosquitto (a private one: the pipeline subscribes to every community),
the pipeline with its rule engine and the default rule pack, PostgreSQL, and
the HTTP API the checker reads the alerts from. Scenarios run side by side,
each in a community of its own, so the whole set takes about as long as the
longest (the 60 s on-delays of the fall and hydrant rules, and the rule
engine's minute of steady intake before it calls a device offline).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from core.settings import DecoderSettings
from simulators.registration import register_scenario, retire_scenario
from simulators.scenario import (
    PROFILES_DIR,
    BoundScenario,
    bind,
    load_scenario,
    shipped_scenarios,
)
from simulators.scenario_run import run_scenario, run_scenarios
from smartcommunity.cli import main
from smartcommunity.embedded import EmbeddedBroker, free_port
from store import schema
from tests.integration.scenario_support import ControlRoom, control_room_fixture  # noqa: F401
from tests.integration.support import pipeline_thread

pytestmark = pytest.mark.integration

TIME_SCALE = "3"


def test_shipped_scenarios_cover_the_issue() -> None:
    names = set(shipped_scenarios())
    assert {
        "fire-confirmed",
        "false-alarm",
        "fall-at-night",
        "sos",
        "geofence",
        "forced-door",
        "denied-access",
        "parcel-overdue",
        "hydrant-pressure",
        "power-cut",
        "quiet-day",
        "panel-fire",
        "alink-smoke",
    } <= names


def test_every_shipped_scenario_passes_end_to_end(
    fresh_database_url: str,
    private_broker: EmbeddedBroker,
    control_room: ControlRoom,
    unique_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Played alongside, and the checker must fail it: an SOS expected from a watch
    # whose wearer never presses the button.
    sos = load_scenario(shipped_scenarios()["sos"]).model_dump(mode="json", exclude={"name"})
    sos["timeline"] = [dict(sos["timeline"][0], event="geofence_enter")]
    never = tmp_path / "sos_never_pressed.yaml"
    never.write_text(yaml.safe_dump(sos))
    monkeypatch.setenv("SC_DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("SC_MQTT_URL", private_broker.url)
    argv = [
        "scenario",
        "run",
        "--all",
        "--file",
        str(never),
        "--time-scale",
        TIME_SCALE,
        "--api-url",
        control_room.url,
        "--token",
        control_room.token,
        "--prefix",
        unique_id,
    ]
    # The Alink scenarios' devices need the shipped product profiles; the panel
    # scenario's UITD plays to the fire bridge the command starts for the run.
    with pipeline_thread(
        fresh_database_url,
        private_broker.url,
        f"{unique_id}-pipe",
        "+",
        decoders=DecoderSettings(profiles=PROFILES_DIR),
    ):
        status = main(argv)
    out, err = capsys.readouterr()
    print(out)  # the tables, for whoever reads a failure
    print(err, file=sys.stderr)
    shipped = shipped_scenarios()
    for name in [*shipped, "sos-never-pressed"]:
        assert re.search(rf"^scenario {name}: ", out, re.MULTILINE), f"no table for {name}"
    total = len(shipped) + 1
    assert f"{total - 1} of {total} scenarios passed; failed: sos-never-pressed" in out
    assert re.search(r"expect\s+wearable\.sos\s+.*\bnone\s+FAIL", out)
    assert status == 1
    # Finished runs are retired: their silent devices must not page anyone later.
    with psycopg.connect(fresh_database_url) as conn:
        active = conn.execute(
            "SELECT count(*) FROM devices WHERE community_id LIKE %s"
            " AND (state <> 'decommissioned' OR decommissioned_at IS NULL)",
            (f"{unique_id}-%",),
        ).fetchone()
    assert active == (0,)
    # The confirmed fire sent B3's micro fire station; its simulated responder accepted
    # over MQTT and arrived: the whole chain (docs/incidents.md).
    with psycopg.connect(fresh_database_url) as conn:
        fire = conn.execute(
            "SELECT i.incident_type, i.stage, x.responder_id FROM incidents AS i"
            " JOIN dispatches AS x ON x.incident_id = i.id"
            " WHERE i.community_id LIKE %s AND x.state = 'arrived'",
            (f"{unique_id}-fire-confirmed-%",),
        ).fetchall()
    assert len(fire) == 1, fire
    assert fire[0][:2] == ("fire", "on_scene")
    assert fire[0][2].endswith("-wang")


def test_a_run_that_breaks_off_says_why_and_the_others_still_report(
    fresh_database_url: str,
    private_broker: EmbeddedBroker,
    control_room: ControlRoom,
    unique_id: str,
) -> None:
    shipped = shipped_scenarios()
    scenarios = [load_scenario(shipped["sos"]), load_scenario(shipped["geofence"])]
    # The sos run's registry goes to a database that is not there: a real refusal.
    missing = f"{fresh_database_url.rsplit('/', 1)[0]}/{unique_id}_no_such_database"

    def register(url: str, bound: BoundScenario) -> None:
        register_scenario(missing if bound.scenario.name == "sos" else url, bound)

    with pipeline_thread(fresh_database_url, private_broker.url, f"{unique_id}-pipe", "+"):
        results = run_scenarios(
            scenarios,
            mqtt_url=private_broker.url,
            time_scale=float(TIME_SCALE),
            prefix=unique_id,
            **control_room.run_hooks(register),
        )
    sos, geofence = results
    assert not sos.passed
    assert sos.verdict is None
    assert sos.error is not None
    assert "OperationalError" in sos.error
    assert f"{unique_id}_no_such_database" in sos.error
    assert sos.table.startswith("scenario sos: ")
    assert "ERROR: OperationalError" in sos.table
    assert geofence.error is None
    assert geofence.passed, geofence.table
    # Retiring waited for the cast's offline statuses: none became a dead letter.
    with psycopg.connect(fresh_database_url) as conn:
        late = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE reason = 'device_decommissioned'"
        ).fetchone()
    assert late == (0,)


def test_a_run_whose_broker_is_gone_retires_what_it_registered(
    fresh_database_url: str, control_room: ControlRoom, unique_id: str
) -> None:
    bound = bind(load_scenario(shipped_scenarios()["sos"]), f"{unique_id}-sos")

    result = run_scenario(
        bound,
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # nothing listens there
        **control_room.run_hooks(),
    )
    assert not result.passed
    assert result.error is not None
    assert result.error.startswith("ServiceUnavailable: mqtt")
    with psycopg.connect(fresh_database_url) as conn:
        states = conn.execute(
            "SELECT DISTINCT state FROM devices WHERE community_id = %s", (bound.community.id,)
        ).fetchall()
    assert states == [("decommissioned",)]


def test_retiring_waits_for_the_casts_offline_status(
    fresh_database_url: str, unique_id: str
) -> None:
    schema.upgrade(fresh_database_url)
    bound = bind(load_scenario(shipped_scenarios()["sos"]), f"{unique_id}-retire")
    register_scenario(fresh_database_url, bound)
    member = bound.community.placed[0].device.id
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("UPDATE devices SET online = true, status_at = now() WHERE id = %s", (member,))
    said_offline = threading.Event()

    def last_words() -> None:
        # What the pipeline does when the device's offline status (or Will) arrives,
        # a moment after the run has ended and retiring has begun.
        said_offline.wait(10)
        time.sleep(1.0)
        with psycopg.connect(fresh_database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE devices SET online = false, status_at = clock_timestamp() WHERE id = %s",
                (member,),
            )

    writer = threading.Thread(target=last_words)
    writer.start()
    try:
        retiring = threading.Thread(target=retire_scenario, args=(fresh_database_url, bound))
        retiring.start()
        said_offline.set()
        retiring.join(30)
    finally:
        writer.join(10)
    with psycopg.connect(fresh_database_url) as conn:
        row = conn.execute(
            "SELECT state, decommissioned_at >= status_at FROM devices WHERE id = %s", (member,)
        ).fetchone()
    assert row == ("decommissioned", True)  # retired only after its offline status
