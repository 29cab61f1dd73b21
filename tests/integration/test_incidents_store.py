"""Incidents in the real database under an injected clock: a confirmed fire dispatches
the building's micro fire station team; a responder who does not accept in time is
escalated past (next on the roster, the leader, the street control room), each step
on the timeline; an SOS calls the care worker and the guard on duty."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from alerts.incident_desk import IncidentDesk
from alerts.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from core.passwords import verify_password
from smartcommunity.cli import main
from store.incidents import (
    acknowledge,
    escalate_due,
    infer_arrivals,
    resolve,
    respond,
    sync_alerts,
)
from store.rosters import on_duty_now
from store.schema import upgrade
from tests.integration.support import one_row, webhook_receiver
from tests.servers import database_url_for, temporary_database, unique_name

pytestmark = pytest.mark.integration

# 2026-11-30 10:00 Beijing (a Monday): inside every shift below.
T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


@dataclass
class Site:
    db: psycopg.Connection[Any]
    community: str
    building: str
    url: str

    def alert(self, rule: str, severity: str, at: datetime, device: str | None = None) -> int:
        row = one_row(
            self.db,
            "INSERT INTO alerts (rule_id, subject, community_id, building, device_id, rule_type,"
            " severity, initial_severity, state, title, first_seen, last_seen, raised_at)"
            " VALUES (%s, %s, %s, %s, %s, 'correlation', %s, %s, 'open', 'Fire', %s, %s, %s)"
            " RETURNING id",
            (
                rule,
                f"building:{self.building}:{rule}",
                self.community,
                self.building,
                device,
                severity,
                severity,
                at,
                at,
                at,
            ),
        )
        return int(row[0])

    def steps(self, incident: int) -> list[tuple[str, str | None]]:
        return [
            (str(s), r)
            for s, r in self.db.execute(
                "SELECT step, responder_id FROM incident_steps WHERE incident_id = %s"
                " ORDER BY at, id",
                (incident,),
            )
        ]

    def incident_of(self, alert: int) -> int:
        row = one_row(
            self.db, "SELECT incident_id FROM incident_alerts WHERE alert_id = %s", (alert,)
        )
        return int(row[0])

    def open_dispatch(self, incident: int, responder: str) -> int:
        row = self.db.execute(
            "SELECT id FROM dispatches WHERE incident_id = %s AND responder_id = %s"
            " AND state IN ('sent', 'accepted')",
            (incident, responder),
        ).fetchone()
        assert row is not None, (incident, responder)
        return int(row[0])


@pytest.fixture(scope="module")
def migrated(database_server_url: str) -> Iterator[str]:
    """A migrated database to copy: a fresh one per test costs a copy, not a migration."""
    with temporary_database(database_server_url, prefix="sc_incidents_tmpl") as url:
        upgrade(url)
        name = url.rsplit("/", 1)[1]
        # A template is copied only while nobody is connected to it, and TimescaleDB's
        # job scheduler connects to every database that has the extension.
        with psycopg.connect(database_server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        yield name


@pytest.fixture
def site(database_server_url: str, migrated: str, unique_id: str) -> Iterator[Site]:
    """A database of its own: the desk's passes (sync, escalate) span every community."""
    name = unique_name("sc_incidents")
    with psycopg.connect(database_server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(migrated)
            )
        )
    url = database_url_for(database_server_url, name)
    try:
        yield from _site(url, unique_id)
    finally:
        with psycopg.connect(database_server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _site(url: str, unique_id: str) -> Iterator[Site]:
    with psycopg.connect(url, autocommit=True) as db:
        c, b = unique_id, "B3"
        db.execute(
            "INSERT INTO communities (id, name, street_control_room) VALUES (%s, %s, 'Street 1')",
            (c, c),
        )
        db.execute("INSERT INTO buildings (community_id, id) VALUES (%s, %s)", (c, b))
        for rid, role in (
            ("fs-a", "micro_fire_station"),
            ("fs-b", "micro_fire_station"),
            ("fs-lead", "micro_fire_station"),
            ("care-1", "care_worker"),
            ("guard-1", "guard"),
            ("guard-2", "guard"),
        ):
            db.execute(
                "INSERT INTO responders (id, community_id, name, role, phone)"
                " VALUES (%s, %s, %s, %s, '13800000000')",
                (rid, c, rid.upper(), role),
            )
        db.execute(
            "INSERT INTO teams (id, community_id, building_id, name, kind, leader_id) VALUES"
            " ('fire-b3', %s, %s, 'Micro fire station B3', 'micro_fire_station', 'fs-lead'),"
            " ('guards', %s, NULL, 'Guards', 'security', NULL)",
            (c, b, c),
        )
        for team, responder, start, end in (
            ("fire-b3", "fs-a", time(8), time(20)),
            ("fire-b3", "fs-b", time(20), time(8)),
            ("guards", "guard-1", time(0), time(0)),
            ("guards", "guard-2", time(0), time(0)),
        ):
            for weekday in range(7):
                db.execute(
                    "INSERT INTO shifts (community_id, team_id, responder_id, weekday, starts,"
                    " ends) VALUES (%s, %s, %s, %s, %s, %s)",
                    (c, team, responder, weekday, start, end),
                )
        yield Site(db, c, b, url)


def test_confirmed_fire_dispatches_the_station_and_escalates_up_the_ladder(site: Site) -> None:
    db = site.db
    pre = site.alert("fire.confirmed", "major", T0)
    assert sync_alerts(db, T0) != []
    incident = site.incident_of(pre)
    acknowledge(db, incident, "user:op", T0 + timedelta(seconds=10))
    # A pre-alarm opens the incident but sends nobody.
    assert db.execute("SELECT count(*) FROM dispatches").fetchone() == (0,)
    # The same alert raised to critical: confirmed; the on-duty member goes at once.
    db.execute("UPDATE alerts SET severity = 'critical' WHERE id = %s", (pre,))
    forced = site.alert("access.door_forced", "critical", T0 + timedelta(seconds=20))
    sync_alerts(db, T0 + timedelta(seconds=30))
    assert site.incident_of(forced) == incident  # the same building: one incident
    assert on_duty_now(db, "fire-b3", T0) == ["fs-a"]
    first = site.open_dispatch(incident, "fs-a")
    # Two deliveries are only made with a webhook gateway: MQTT here.
    assert db.execute(
        "SELECT channel FROM dispatch_deliveries WHERE dispatch_id = %s", (first,)
    ).fetchall() == [("mqtt",)]

    # fs-a does not accept within 60 s: fs-b (next on the roster) is called.
    assert escalate_due(db, T0 + timedelta(seconds=89)) == 0
    assert escalate_due(db, T0 + timedelta(seconds=90)) >= 1
    second = site.open_dispatch(incident, "fs-b")
    # ... nor fs-b: the leader; then nobody is left: the street control room.
    escalate_due(db, T0 + timedelta(seconds=151))
    site.open_dispatch(incident, "fs-lead")
    escalate_due(db, T0 + timedelta(seconds=400))
    steps = site.steps(incident)
    escalated = [(s, r) for s, r in steps if s == "escalated"]
    assert ("escalated", "fs-b") in escalated
    assert ("escalated", "fs-lead") in escalated
    assert ("escalated", None) in escalated  # the control room
    room = db.execute(
        "SELECT detail->>'control_room' FROM incident_steps WHERE incident_id = %s"
        " AND step = 'escalated' AND responder_id IS NULL",
        (incident,),
    ).fetchone()
    assert room == ("Street 1",)
    # Nothing above the control room: later ticks add no escalation.
    before = len(site.steps(incident))
    escalate_due(db, T0 + timedelta(hours=3))
    assert [s for s, _ in site.steps(incident)[before:]].count("escalated") == 0
    assert second != first


def test_acceptance_and_badge_arrival_stop_the_escalation(site: Site) -> None:
    db = site.db
    alert = site.alert("fire.confirmed", "critical", T0)
    sync_alerts(db, T0)
    incident = site.incident_of(alert)
    dispatch = site.open_dispatch(incident, "fs-a")
    assert respond(db, dispatch, "received", T0 + timedelta(seconds=2), "responder:fs-a", "mqtt")
    assert respond(db, dispatch, "accept", T0 + timedelta(seconds=20), "responder:fs-a", "mqtt")
    assert not respond(db, dispatch, "accept", T0 + timedelta(seconds=21), "responder:fs-a", "api")
    assert escalate_due(db, T0 + timedelta(seconds=100)) == 0
    # The door reader of building B3 sees fs-a's badge: on scene, inferred.
    db.execute(
        "INSERT INTO devices (id, community_id, device_class, building) VALUES (%s, %s,"
        " 'access', %s)",
        (f"door-{site.community}", site.community, site.building),
    )
    db.execute(
        "INSERT INTO device_events (device_id, ts, event, data, received_at) VALUES"
        " (%s, %s, 'access_granted', '{\"badge\": \"fs-a\"}', %s)",
        (f"door-{site.community}", T0 + timedelta(seconds=150), T0 + timedelta(seconds=150)),
    )
    assert infer_arrivals(db, T0 + timedelta(seconds=160)) == 1
    row = db.execute(
        "SELECT stage, arrived_at - opened_at FROM incidents WHERE id = %s", (incident,)
    ).fetchone()
    assert row == ("on_scene", timedelta(seconds=150))
    assert escalate_due(db, T0 + timedelta(seconds=200)) == 0  # arrived within 180 s
    assert resolve(db, incident, "user:op", T0 + timedelta(minutes=20), "out")
    names = [s for s, _ in site.steps(incident)]
    assert names == ["raised", "dispatched", "received", "accepted", "on_scene", "resolved"]


def test_sos_calls_the_care_worker_and_the_guard_on_duty(site: Site) -> None:
    db = site.db
    db.execute(
        "INSERT INTO residents (id, community_id, name, care_worker_id)"
        " VALUES (%s, %s, 'Mrs Li', 'care-1')",
        (f"r-{site.community}", site.community),
    )
    db.execute(
        "INSERT INTO devices (id, community_id, device_class, building, resident_id)"
        " VALUES (%s, %s, 'wearable', %s, %s)",
        (f"w-{site.community}", site.community, site.building, f"r-{site.community}"),
    )
    alert = site.alert("wearable.sos", "critical", T0, device=f"w-{site.community}")
    sync_alerts(db, T0)
    incident = site.incident_of(alert)
    called = {
        r
        for (r,) in db.execute(
            "SELECT responder_id FROM dispatches WHERE incident_id = %s", (incident,)
        )
    }
    assert called == {"care-1", "guard-1", "guard-2"}
    # The care worker's own watch enters the building's geofence: on scene, inferred.
    db.execute(
        "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'wearable')",
        (f"cw-{site.community}", site.community),
    )
    db.execute(
        "INSERT INTO device_events (device_id, ts, event, data, received_at) VALUES"
        " (%s, %s, 'geofence_enter', %s, %s)",
        (
            f"cw-{site.community}",
            T0 + timedelta(seconds=240),
            '{"building": "B3", "responder": "care-1"}',
            T0 + timedelta(seconds=240),
        ),
    )
    assert infer_arrivals(db, T0 + timedelta(seconds=250)) == 1
    arrived = db.execute(
        "SELECT responder_id FROM dispatches WHERE incident_id = %s AND state = 'arrived'",
        (incident,),
    ).fetchall()
    assert arrived == [("care-1",)]


def test_the_cli_dispatches_from_an_alert_and_shows_the_duty_board(
    site: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SC_DATABASE_URL", site.url)
    alert = site.alert("access.door_forced", "critical", datetime.now(UTC))
    assert main(["incidents", "dispatch", "--alert", str(alert), "--team", "guards"]) == 0
    assert "2 dispatched" in capsys.readouterr().out
    incident = site.incident_of(alert)
    called = {
        r
        for (r,) in site.db.execute(
            "SELECT responder_id FROM dispatches WHERE incident_id = %s", (incident,)
        )
    }
    assert called == {"guard-1", "guard-2"}
    assert main(["teams", "duty", "--community", site.community]) == 0
    board = capsys.readouterr().out
    assert "guard-1, guard-2" in board
    assert main(["responders", "credentials", "guard-1"]) == 0
    login = json.loads(capsys.readouterr().out)
    stored = one_row(
        site.db, "SELECT mqtt_username, mqtt_password_hash FROM responders WHERE id = 'guard-1'"
    )
    assert stored[0] == login["username"]
    assert verify_password(login["password"], stored[1])
    assert main(["incidents", "resolve", str(incident), "--note", "door repaired"]) == 0
    assert site.steps(incident)[-1] == ("resolved", None)


def test_the_cli_adds_a_responder_a_team_and_its_roster(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SC_DATABASE_URL", site.url)
    c, resident = site.community, f"r-{site.community}"
    site.db.execute(
        "INSERT INTO residents (id, community_id, name) VALUES (%s, %s, 'Mr Wang')", (resident, c)
    )
    add = ["responders", "add", "--id", "care-2", "--community", c, "--name", "Care 2"]
    assert main([*add, "--role", "care_worker", "--care-for", resident]) == 0
    assert site.db.execute(
        "SELECT community_id, name, role, phone FROM responders WHERE id = 'care-2'"
    ).fetchone() == (c, "Care 2", "care_worker", "")
    assert site.db.execute(
        "SELECT care_worker_id FROM residents WHERE id = %s", (resident,)
    ).fetchone() == ("care-2",)
    assert main([*add, "--role", "guard"]) == 1  # the id is taken
    team = ["teams", "add", "--id", "care", "--community", c, "--building", site.building]
    assert main([*team, "--name", "Care", "--kind", "care", "--leader", "care-1"]) == 0
    assert site.db.execute(
        "SELECT community_id, building_id, name, kind, leader_id FROM teams WHERE id = 'care'"
    ).fetchone() == (c, site.building, "Care", "care", "care-1")
    assert main([*team, "--name", "Other", "--kind", "care"]) == 1  # the id is taken
    shift = ["teams", "shift", "--team", "care", "--responder", "care-2"]
    days = ["--weekday", "5", "--weekday", "1"]
    assert main([*shift, *days, "--starts", "22:00", "--ends", "06:00"]) == 0
    assert site.db.execute(
        "SELECT community_id, responder_id, weekday, starts, ends FROM shifts"
        " WHERE team_id = 'care' ORDER BY weekday"
    ).fetchall() == [(c, "care-2", d, time(22), time(6)) for d in (1, 5)]
    nowhere = ["teams", "shift", "--team", "none", "--responder", "care-2", "--weekday", "1"]
    assert main([*nowhere, "--starts", "08:00", "--ends", "09:00"]) == 1


def test_the_desk_pushes_a_signed_webhook_and_records_the_delivery(site: Site) -> None:
    """The gateway channel on its own: a local receiver checks the signature; the MQTT
    channel of a desk that never connected stays pending with its reason."""
    with webhook_receiver("/sms") as got:
        url = got.url
        site.db.execute(
            "UPDATE communities SET dispatch_webhook_url = %s, dispatch_webhook_secret ="
            " 'gateway-secret' WHERE id = %s",
            (url, site.community),
        )
        alert = site.alert("fire.confirmed", "critical", T0)
        sync_alerts(site.db, T0)
        dispatch_id = site.open_dispatch(site.incident_of(alert), "fs-a")
        desk = IncidentDesk(
            url=site.url,
            mqtt_host="127.0.0.1",
            mqtt_port=1,
            mqtt_username=None,
            mqtt_password=None,
            client_id="never-started",
            private_destinations=True,
        )
        assert desk.deliver_due(site.db, T0) == 2
    ((headers, body),) = got.posts
    assert headers[SIGNATURE_HEADER.lower()] == sign(
        "gateway-secret", headers[TIMESTAMP_HEADER.lower()], body
    )
    assert json.loads(body)["dispatch_id"] == dispatch_id
    assert json.loads(body)["responder_id"] == "fs-a"
    deliveries = {
        channel: (state, attempts, error)
        for channel, state, attempts, error in site.db.execute(
            "SELECT channel, state, attempts, last_error FROM dispatch_deliveries"
            " WHERE dispatch_id = %s",
            (dispatch_id,),
        )
    }
    assert deliveries["webhook"] == ("delivered", 1, None)
    assert deliveries["mqtt"] == ("pending", 1, "not connected to the broker")
    row = site.db.execute(
        "SELECT delivered_at FROM dispatches WHERE id = %s", (dispatch_id,)
    ).fetchone()
    assert row == (T0,)


def test_an_sos_with_nobody_to_send_goes_to_the_control_room_at_once(site: Site) -> None:
    site.db.execute("DELETE FROM shifts WHERE team_id = 'guards'")
    site.db.execute("DELETE FROM teams WHERE id = 'guards'")
    alert = site.alert("wearable.sos", "critical", T0)
    sync_alerts(site.db, T0)
    incident = site.incident_of(alert)
    assert site.steps(incident) == [("raised", None), ("escalated", None)]
