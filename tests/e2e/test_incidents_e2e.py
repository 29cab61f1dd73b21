"""A confirmed fire, end to end through the real broker and database: two detectors of
building B3 alarm, the pipeline confirms the fire, the incident desk dispatches the
building's micro fire station team over MQTT; the first simulated responder does not
answer and is escalated past, the next accepts and arrives; the timeline holds every
step and the monthly report the arrival time."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from core.visits import Month
from simulators.responder import ResponderActor, ResponderBehaviour
from store.accounts import create_token
from tests.integration.alerts_support import rows, setup_devices
from tests.integration.support import Publisher, pipeline_thread, wait_for

pytestmark = pytest.mark.integration


def test_confirmed_fire_is_dispatched_answered_and_reported(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    url, community = fresh_database_url, unique_id
    smoke1, smoke2 = f"{unique_id}-2f", f"{unique_id}-3f"
    setup_devices(url, community, [(smoke1, "fire", "B3"), (smoke2, "fire", "B3")])
    with psycopg.connect(url, autocommit=True) as db:
        for rid in ("fs-a", "fs-b"):
            db.execute(
                "INSERT INTO responders (id, community_id, name, role) VALUES (%s, %s, %s,"
                " 'micro_fire_station')",
                (f"{unique_id}-{rid}", community, rid),
            )
        db.execute(
            "INSERT INTO teams (id, community_id, building_id, name, kind) VALUES"
            " (%s, %s, 'B3', 'Station B3', 'micro_fire_station')",
            (f"{unique_id}-team", community),
        )
        # fs-a around the clock; fs-b on the roster but off duty now (a shift three
        # days away): the ladder's next person when fs-a does not answer.
        off_day = (datetime.now(ZoneInfo("Asia/Shanghai")).weekday() + 3) % 7
        shifts = [("fs-a", day, "00:00", "00:00") for day in range(7)]
        shifts.append(("fs-b", off_day, "10:00", "11:00"))
        for rid, weekday, starts, ends in shifts:
            db.execute(
                "INSERT INTO shifts (community_id, team_id, responder_id, weekday, starts,"
                " ends) VALUES (%s, %s, %s, %s, %s, %s)",
                (community, f"{unique_id}-team", f"{unique_id}-{rid}", weekday, starts, ends),
            )
        # Seconds, not minutes: fs-a's silence is escalated within the test's time.
        db.execute(
            "INSERT INTO incident_targets (community_id, incident_type, ack_s, dispatch_s,"
            " accept_s, arrival_s, resolve_s) VALUES (%s, 'fire', 600, 600, 3, 120, 3600)",
            (community,),
        )
    silent = ResponderActor(
        community, f"{unique_id}-fs-a", mqtt_url, ResponderBehaviour(answers=False)
    )
    quick = ResponderActor(
        community,
        f"{unique_id}-fs-b",
        mqtt_url,
        ResponderBehaviour(accept_after_s=0.5, travel_s=1.5),
    )
    silent.start()
    quick.start()
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    now_ms = int(time.time() * 1000) - 10_000

    def alarm(device: str, ts: int) -> None:
        body = {"ts": ts, "seq": 1, "event": "smoke_alarm", "data": {"value": 6.4}}
        publisher.publish(f"community/{community}/fire/{device}/event", json.dumps(body).encode())
        publisher.flush()

    def stage() -> str | None:
        found = rows(url, "SELECT stage FROM incidents WHERE community_id = %s", (community,))
        return str(found[0][0]) if found else None

    try:
        with pipeline_thread(url, mqtt_url, f"p-{unique_id}", community):
            alarm(smoke1, now_ms)
            wait_for(lambda: stage() == "raised", 30, "the pre-alarm's incident")
            alarm(smoke2, now_ms + 5_000)
            wait_for(lambda: stage() == "on_scene", 60, "the responder on scene")
    finally:
        publisher.close()
        silent.stop()
        quick.stop()

    steps = rows(
        url,
        "SELECT step, coalesce(responder_id, '') FROM incident_steps WHERE community_id = %s"
        " ORDER BY at, id",
        (community,),
    )
    a, b = f"{unique_id}-fs-a", f"{unique_id}-fs-b"
    names = [(s, r.removeprefix(f"{unique_id}-")) for s, r in steps]
    assert names[0] == ("raised", "")
    for expected in [
        ("dispatched", "fs-a"),
        ("no_answer", "fs-a"),
        ("escalated", "fs-b"),
        ("dispatched", "fs-b"),
        ("received", "fs-b"),
        ("accepted", "fs-b"),
        ("on_scene", "fs-b"),
    ]:
        assert expected in names, (expected, names)
    assert names.index(("no_answer", "fs-a")) < names.index(("accepted", "fs-b"))
    # Both dispatches reached the broker; only fs-b's app said it got it.
    delivered = rows(
        url,
        "SELECT responder_id, delivered_at IS NOT NULL, received_at IS NOT NULL, state"
        " FROM dispatches WHERE community_id = %s ORDER BY id",
        (community,),
    )
    assert delivered == [(a, True, False, "timed_out"), (b, True, True, "arrived")]
    assert silent.received
    assert not silent.sent

    # The board's record and the month's figure, through the API.
    with TestClient(create_app(Settings(database_url=url))) as client:
        with psycopg.connect(url, autocommit=True) as db:
            token = create_token(db, "e2e")
        auth = {"Authorization": f"Bearer {token}"}
        incidents = client.get(f"/api/v1/incidents?community_id={community}", headers=auth)
        assert incidents.status_code == 200
        (incident,) = incidents.json()["data"]
        assert incident["incident_type"] == "fire"
        assert incident["stage"] == "on_scene"
        opened = datetime.fromisoformat(incident["opened_at"])
        arrived = datetime.fromisoformat(incident["arrived_at"])
        month = Month.of(opened, ZoneInfo("Asia/Shanghai"))
        report = client.get(
            f"/api/v1/communities/{community}/report?month={month}", headers=auth
        ).json()
        exported = client.get(
            f"/api/v1/communities/{community}/report?month={month}&format=csv", headers=auth
        ).text
    figures = report["incidents"]
    assert figures["by_type"] == {"fire": 1}
    assert figures["arrive"]["count"] == 1
    assert figures["arrive"]["median_s"] == pytest.approx((arrived - opened).total_seconds())
    assert figures["escalations"] >= 1
    # The CSV export carries the same figure.
    median = figures["arrive"]["median_s"]
    assert f"incidents.arrive.median_s,{median}" in exported.splitlines()
    assert arrived > opened > datetime(2026, 1, 1, tzinfo=UTC)
