"""A generated community, registered and simulated by two processes, is stored without a refusal:
simulated devices are registered devices."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from core.passwords import verify_password
from simulators.credentials import load_credentials
from simulators.population import generate_community
from simulators.registration import register_devices
from simulators.runner import run_simulation
from simulators.stats import Progress
from smartcommunity.cli import main
from store import schema
from tests.integration.support import count, pipeline_thread, wait_for
from tests.integration.test_simulate_publish import clear_retained

pytestmark = pytest.mark.integration

MESSAGES = 600


def test_generated_community_registers_and_flows_through_two_processes(
    database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community = generate_community(unique_id, buildings=2, seed=4)
    schema.upgrade(database_url)
    buildings = {p.id: p.building for p in community.placed}
    first = register_devices(database_url, community.devices, buildings=buildings)
    again = register_devices(database_url, community.devices, buildings=buildings)
    assert (first.new, again.new) == (len(community.placed), 0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows: dict[str, str | None] = dict(
            conn.execute(
                "SELECT id, building FROM devices WHERE community_id = %s", (unique_id,)
            ).fetchall()
        )
    assert rows == buildings

    progress: list[Progress] = []
    with pipeline_thread(database_url, mqtt_url, f"{unique_id}-pipe", unique_id):
        stats = run_simulation(
            mqtt_url=mqtt_url,
            roster=community.devices,
            seed=4,
            rate=400,
            max_messages=MESSAGES,
            incident_scale=50.0,
            processes=2,
            progress_interval_s=0.2,
            on_progress=progress.append,
        )
        readings_of = (
            "SELECT count(DISTINCT (r.device_id, r.ts)) FROM readings AS r"
            f" JOIN devices AS d ON d.id = r.device_id WHERE d.community_id = '{unique_id}'"
        )
        wait_for(lambda: count(database_url, readings_of) >= MESSAGES, 30, "every reading")
        events_of = readings_of.replace("readings", "device_events").replace(
            "r.ts", "r.ts, r.event"
        )
        wait_for(lambda: count(database_url, events_of) >= stats.events, 30, "every event")
    assert stats.telemetry == MESSAGES
    assert (stats.unconfirmed, stats.refused) == (0, 0)
    assert stats.statuses == 2 * len(community.placed)
    assert progress, "no progress while it ran"
    refused = f"SELECT count(*) FROM dead_letters WHERE topic LIKE 'community/{unique_id}/%'"
    assert count(database_url, refused) == 0
    clear_retained(
        mqtt_url,
        [f"community/{unique_id}/{d.device_class}/{d.id}/status" for d in community.devices],
    )


def test_cli_generates_writes_and_registers(
    database_url: str, tmp_path: Path, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SC_DATABASE_URL", database_url)
    argv = ["simulate", "--community", unique_id, "--buildings", "2", "--seed", "3"]
    out = tmp_path / "roster"
    creds = tmp_path / "credentials.csv"
    register = ["--register", "--credentials-out", str(creds), "--no-run"]
    assert main([*argv, "--roster-out", str(out), *register]) == 0
    expected = len(generate_community(unique_id, buildings=2, seed=3).placed)
    registered = f"SELECT count(*) FROM devices WHERE community_id = '{unique_id}'"
    assert count(database_url, registered) == expected
    assert (out / "devices.csv").read_text().count("\n") == expected + 1
    assert (out / "community.json").exists()
    # Each device got its own MQTT password, as an installer's import gives it: the
    # broker export leaves none out, and the written password matches the stored hash.
    issued = load_credentials(creds)
    assert len(issued) == expected
    assert creds.stat().st_mode & 0o077 == 0
    with psycopg.connect(database_url) as conn:
        hashes: dict[str, str] = dict(
            conn.execute(
                "SELECT id, mqtt_password_hash FROM devices WHERE community_id = %s",
                (unique_id,),
            ).fetchall()
        )
    assert all(verify_password(c.password, hashes[d]) for d, c in issued.items())
    # Registering again issues nothing new and keeps the passwords that work.
    assert main([*argv, *register]) == 0
    assert load_credentials(creds) == issued
