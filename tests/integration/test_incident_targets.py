"""Targets per community and incident type: set by administrators through the API and the
CLI, read by the control room, validated, and obeyed by the escalation at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import create_app
from core.incidents import DEFAULT_TARGETS, IncidentType, Targets, target_problems
from core.settings import Settings
from smartcommunity.cli import main
from store.incidents import acknowledge, escalate_due, respond, sync_alerts
from tests.integration.test_access_matrix import World, fresh
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


@given(st.lists(st.integers(min_value=-10, max_value=40 * 86400), min_size=5, max_size=5))
@settings(max_examples=200, deadline=None)
def test_target_problems_agrees_with_the_rules(values: list[int]) -> None:
    t = Targets(*values)
    keepable = all(0 < v <= 30 * 86400 for v in values) and (
        t.ack_s <= t.dispatch_s <= t.arrival_s <= t.resolve_s and t.accept_s <= t.arrival_s
    )
    assert (target_problems(t) == []) is keepable


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
