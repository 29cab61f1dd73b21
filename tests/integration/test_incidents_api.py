"""Incidents through the API: who may see and send whom.

An operator of community A neither sees B's responders nor dispatches them (not even
to A's own incident); a responder sees only what was dispatched to them and answers
only that; an operator dispatches from an alert, reassigns and records an arrival,
and the board's countdown follows the (injected) clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.access import Role
from core.settings import Settings
from store.accounts import create_token, create_user
from tests.integration.access_support import World, fresh

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[tuple[World, Clock]]:
    app = create_app(Settings(database_url=database_url))
    clock = Clock()
    app.state.clock = clock
    with TestClient(app) as client, psycopg.connect(database_url, autocommit=True) as db:
        w = World(client, db, fresh("ca"), fresh("cb"))
        w.tokens["root"] = w.populate("incidents")
        yield w, clock


def _get(w: World, role: str, path: str) -> Any:
    return w.client.get("/api/v1" + path, headers=w.headers(role))


def _post(w: World, role: str, path: str, body: Any = None) -> Any:
    return w.client.post("/api/v1" + path, headers=w.headers(role), json=body)


def test_an_operator_of_a_neither_sees_nor_dispatches_bs_responders(
    world: tuple[World, Clock],
) -> None:
    w, _ = world
    mine, theirs = w.responder(w.a), w.responder(w.b)
    listed = _get(w, "operator", "/responders").json()["data"]
    ids = {r["id"] for r in listed}
    assert mine in ids
    assert theirs not in ids
    assert _get(w, "operator", f"/responders?community_id={w.b}").json()["data"] == []
    assert _get(w, "operator", f"/responders/{theirs}").status_code == 404
    assert _get(w, "operator", f"/communities/{w.b}/duty").status_code == 404
    # A's own incident, B's responder named in the body: unknown, and nobody is sent.
    incident = w.incident(w.a)
    answer = _post(w, "operator", f"/incidents/{incident}/dispatch", {"responder_ids": [theirs]})
    assert answer.status_code == 422
    assert "unknown responder" in answer.text
    sent = w.db.execute("SELECT count(*) FROM dispatches WHERE responder_id = %s", (theirs,))
    assert sent.fetchone() == (0,)
    # B's incident: as if it did not exist.
    other = w.incident(w.b)
    answer = _post(w, "operator", f"/incidents/{other}/dispatch", {"responder_ids": [mine]})
    assert answer.status_code == 404
    # The control: the same dispatch with A's responder goes.
    answer = _post(w, "operator", f"/incidents/{incident}/dispatch", {"responder_ids": [mine]})
    assert answer.status_code == 200
    assert mine in {d["responder_id"] for d in answer.json()["dispatches"]}


def test_a_responder_sees_only_what_was_dispatched_to_them(world: tuple[World, Clock]) -> None:
    w, _ = world
    me = create_user(w.db, fresh("resp"), Role.RESPONDER, [w.a])
    token = create_token(w.db, "phone", user_id=me.id)
    colleague = create_user(w.db, fresh("resp"), Role.RESPONDER, [w.a])
    mine = w.dispatch_to(w.a, me.id)
    theirs = w.dispatch_to(w.a, colleague.id)
    headers = {"Authorization": f"Bearer {token}"}
    seen = w.client.get("/api/v1/me/dispatches", headers=headers).json()["data"]
    assert [d["dispatch_id"] for d in seen] == [int(mine)]
    # Nothing else of the community: not its incidents, responders or alerts.
    for path in ("/incidents", "/responders", "/alerts", "/residents", "/communities"):
        assert w.client.get("/api/v1" + path, headers=headers).status_code == 403, path
    # A colleague's dispatch reads as no dispatch; one's own is answered.
    refused = w.client.post(f"/api/v1/me/dispatches/{theirs}/accept", headers=headers)
    assert refused.status_code == 404
    state = w.db.execute("SELECT state FROM dispatches WHERE id = %s", (int(theirs),)).fetchone()
    assert state == ("sent",)
    accepted = w.client.post(f"/api/v1/me/dispatches/{mine}/accept", headers=headers)
    assert accepted.json() == {"dispatch_id": int(mine), "state": "accepted"}
    arrived = w.client.post(f"/api/v1/me/dispatches/{mine}/arrive", headers=headers)
    assert arrived.json()["state"] == "arrived"


def test_dispatch_from_an_alert_reassign_arrival_and_the_countdown(
    world: tuple[World, Clock],
) -> None:
    w, clock = world
    first, second = w.responder(w.a), w.responder(w.a)
    alert = w.alert(w.a)  # raised now, by the wall clock
    clock.now = datetime.now(UTC) + timedelta(seconds=1)
    answer = _post(w, "operator", f"/alerts/{alert}/dispatch", {"responder_ids": [first]})
    assert answer.status_code == 200, answer.text
    incident = answer.json()
    assert int(alert) in incident["alert_ids"]
    assert incident["stage"] == "dispatched"
    # The countdown: the next target not yet met, due from the incident's opening.
    deadline = incident["next_deadline"]
    assert deadline["target"] == "arrival"
    opened = datetime.fromisoformat(incident["opened_at"])
    assert datetime.fromisoformat(deadline["due_at"]) == opened + timedelta(
        seconds=deadline["seconds"]
    )
    path = f"/incidents/{incident['id']}"
    moved = _post(
        w, "operator", path + "/reassign", {"from_responder_id": first, "to_responder_id": second}
    )
    assert moved.status_code == 200
    states = {d["responder_id"]: d["state"] for d in moved.json()["dispatches"]}
    assert states == {first: "cancelled", second: "sent"}
    clock.now += timedelta(seconds=95)
    on_scene = _post(w, "operator", path + "/arrival", {"responder_id": second}).json()
    assert on_scene["stage"] == "on_scene"
    assert on_scene["next_deadline"]["target"] == "resolve"
    steps = [s["step"] for s in on_scene["timeline"]]
    assert steps[:1] == ["raised"]
    assert steps[-3:] == ["reassigned", "dispatched", "on_scene"]
    done = _post(w, "operator", path + "/resolve", {"note": "false alarm, reset"}).json()
    assert done["stage"] == "resolved"
    assert done["next_deadline"] is None
