"""Targets per community and incident type: set by administrators through the API and the
CLI, read by the control room, validated, and obeyed by the escalation at once; and the
street control room's rung pushed like a dispatch (real broker and database)."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from alerts.incident_desk import IncidentDesk
from alerts.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from api.app import create_app
from core.dispatch_contract import control_room_topic
from core.incidents import DEFAULT_TARGETS, IncidentType
from core.settings import Settings
from smartcommunity.cli import main
from store.incidents import acknowledge, escalate_due, respond, sync_alerts
from tests.integration.access_support import World, fresh
from tests.integration.support import one_row, webhook_receiver
from tests.integration.test_incidents_store import T0, Site, migrated, site  # noqa: F401

pytestmark = pytest.mark.integration

FIRE = {"incident_type": "fire", "ack_s": 30, "dispatch_s": 45, "arrival_s": 120, "resolve_s": 900}


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as client, psycopg.connect(database_url, autocommit=True) as db:
        w = World(client, db, fresh("ta"), fresh("tb"))
        w.tokens["root"] = w.populate("targets")
        yield w


def _targets(w: World, role: str, community: str) -> Any:
    return w.client.get(
        f"/api/v1/communities/{community}/incident-targets", headers=w.headers(role)
    )


def _put(w: World, role: str, community: str, body: dict[str, Any]) -> Any:
    return w.client.put(
        f"/api/v1/communities/{community}/incident-targets", headers=w.headers(role), json=body
    )


def test_an_admin_sets_targets_the_control_room_reads_them(world: World) -> None:
    w = world
    before = {t["incident_type"]: t for t in _targets(w, "viewer", w.a).json()["data"]}
    assert set(before) == {k.value for k in IncidentType}
    assert before["fire"]["arrival_s"] == DEFAULT_TARGETS[IncidentType.FIRE].arrival_s == 180
    assert before["fire"]["custom"] is False
    # Operators and viewers read; only administrators change.
    assert _put(w, "operator", w.a, FIRE).status_code == 403
    assert _put(w, "viewer", w.a, FIRE).status_code == 403
    answer = _put(w, "admin", w.a, FIRE)
    assert answer.status_code == 200, answer.text
    for role in ("operator", "viewer", "admin"):
        fire = next(
            t for t in _targets(w, role, w.a).json()["data"] if t["incident_type"] == "fire"
        )
        assert fire["custom"] is True
        assert (fire["ack_s"], fire["dispatch_s"], fire["arrival_s"], fire["resolve_s"]) == (
            30,
            45,
            120,
            900,
        )
        # Not given: the accept time in force is kept.
        assert fire["accept_s"] == DEFAULT_TARGETS[IncidentType.FIRE].accept_s
    sos = next(t for t in _targets(w, "admin", w.a).json()["data"] if t["incident_type"] == "sos")
    assert sos["custom"] is False
    # Another community's targets: as if it did not exist, and unchanged.
    assert _targets(w, "admin", w.b).status_code == 404
    assert _put(w, "admin", w.b, FIRE).status_code == 404
    row = w.db.execute("SELECT count(*) FROM incident_targets WHERE community_id = %s", (w.b,))
    assert row.fetchone() == (0,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arrival_s": 1000}, "arrival_s must not exceed resolve_s"),
        ({"ack_s": 50}, "ack_s must not exceed dispatch_s"),
        ({"dispatch_s": 121}, "dispatch_s must not exceed arrival_s"),
        ({"accept_s": 121}, "accept_s must not exceed arrival_s"),
        ({"ack_s": 0}, "greater than or equal to 1"),
        ({"resolve_s": -5}, "greater than or equal to 1"),
        ({"incident_type": "flood"}, "incident_type"),
    ],
)
def test_targets_that_cannot_be_kept_are_refused(
    world: World, change: dict[str, Any], message: str
) -> None:
    w = world
    before = _targets(w, "admin", w.a).json()
    answer = _put(w, "admin", w.a, {**FIRE, **change})
    assert answer.status_code == 422
    assert message in answer.text
    assert _targets(w, "admin", w.a).json() == before


def test_a_changed_arrival_target_escalates_sooner(
    site: Site,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same fire at the same (injected) time: on time under the default 180 s, late
    once the community's arrival target is 120 s."""
    db = site.db
    alert = site.alert("fire.confirmed", "critical", T0)
    sync_alerts(db, T0)
    incident = site.incident_of(alert)
    acknowledge(db, incident, "user:op", T0 + timedelta(seconds=5))
    dispatch = site.open_dispatch(incident, "fs-a")
    assert respond(db, dispatch, "accept", T0 + timedelta(seconds=20), "responder:fs-a", "mqtt")
    assert escalate_due(db, T0 + timedelta(seconds=150)) == 0

    monkeypatch.setenv("SC_DATABASE_URL", site.url)
    assert main(["incidents", "targets", "--community", site.community, "--set", "fire",
                 "ack=30", "dispatch=60", "arrival=120", "resolve=1800"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "120" in table
    assert "set" in table
    # Refused: arrival after resolve, an unknown key, an unknown type; nothing changes.
    for words in (["fire", "arrival=4000"], ["fire", "arrive=5"], ["flood", "ack=5"]):
        args = ["incidents", "targets", "--community", site.community, "--set", *words]
        assert main(args) == 1
    assert "arrival_s must not exceed resolve_s" in capsys.readouterr().err

    assert escalate_due(db, T0 + timedelta(seconds=150)) == 1
    missed = db.execute(
        "SELECT detail->>'target', (detail->>'seconds')::int FROM incident_steps"
        " WHERE incident_id = %s AND step = 'target_missed'",
        (incident,),
    ).fetchall()
    assert missed == [("arrival", 120)]
    # The next rung is called: fs-b, next on the roster.
    site.open_dispatch(incident, "fs-b")
    assert main(["incidents", "targets", "--community", site.community]) == 0
    assert "default" in capsys.readouterr().out  # the other types keep the defaults


def test_a_control_room_escalation_is_pushed_like_a_dispatch(site: Site, mqtt_url: str) -> None:  # noqa: F811
    """An SOS with nobody to send climbs to the street control room at once: the desk
    publishes it on the control room's topic (real broker) and posts it, signed, to the
    community's gateway; both deliveries are recorded on the step, and not repeated."""
    with webhook_receiver("/room") as got:
        parts = urlsplit(mqtt_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 1883
        messages: queue.Queue[bytes] = queue.Queue()
        listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cr-{site.community}")
        subscribed = threading.Event()
        listener.on_message = lambda _c, _u, m: messages.put(bytes(m.payload))
        listener.on_subscribe = lambda *_a: subscribed.set()
        listener.connect(host, port)
        listener.loop_start()
        started = time.monotonic()
        desk = IncidentDesk(
            url=site.url,
            mqtt_host=host,
            mqtt_port=port,
            mqtt_username=None,
            mqtt_password=None,
            client_id=f"desk-{site.community}",
            tick_s=0.2,
            # T0 then on in real time: the shifts are T0's, and a retry's wait passes.
            clock=lambda: T0 + timedelta(seconds=time.monotonic() - started),
            private_destinations=True,
        )
        try:
            listener.subscribe(control_room_topic(site.community), qos=1)
            assert subscribed.wait(30)
            site.db.execute(
                "UPDATE communities SET dispatch_webhook_url = %s, dispatch_webhook_secret ="
                " 'room-secret' WHERE id = %s",
                (got.url, site.community),
            )
            site.db.execute("DELETE FROM shifts WHERE team_id = 'guards'")
            site.db.execute("DELETE FROM teams WHERE id = 'guards'")
            desk.start()
            assert desk.wait_connected(30)
            # The desk's own pass groups the alert and climbs to the control room at once.
            alert = site.alert("wearable.sos", "critical", T0)
            assert _until(lambda: site.db.execute(
                "SELECT 1 FROM incident_alerts WHERE alert_id = %s", (alert,)
            ).fetchone() is not None)  # fmt: skip
            incident = site.incident_of(alert)
            message = json.loads(messages.get(timeout=30))
            assert message["event"] == "escalation"
            assert message["incident_id"] == incident
            assert message["control_room"] == "Street 1"
            assert _until(
                lambda: all(c["state"] == "delivered" for c in _push_of(site, incident).values())
            )
            push = _push_of(site, incident)
            assert {c: (s["state"], s["attempts"]) for c, s in push.items()} == {
                "mqtt": ("delivered", 1),
                "webhook": ("delivered", 1),
            }
            # Later passes push nothing again.
            ticks = desk.ticks
            assert _until(lambda: desk.ticks >= ticks + 3)
            assert messages.empty()
        finally:
            desk.stop()
            listener.loop_stop()
            listener.disconnect()
    ((headers, body),) = got.posts
    assert headers[SIGNATURE_HEADER.lower()] == sign(
        "room-secret", headers[TIMESTAMP_HEADER.lower()], body
    )
    assert json.loads(body)["incident_id"] == incident


def _until(fact: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll a fact, bounded: the machine is loaded, the desk ticks on its own thread."""
    end = time.monotonic() + timeout
    while not fact():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _push_of(at: Site, incident: int) -> dict[str, Any]:
    row = one_row(
        at.db,
        "SELECT detail->'push' FROM incident_steps WHERE incident_id = %s AND step = 'escalated'"
        " AND responder_id IS NULL",
        (incident,),
    )
    return dict(row[0])
