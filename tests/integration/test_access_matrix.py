"""Who may do what, and see what: every role against every API route, and probes across
communities that must be answered exactly as for things that do not exist.

Two communities, A and B. Each role has a user scoped to A. Every route of the
API is called by every role on fresh objects of A: a role the policy allows must
succeed (2xx), any other gets 403. Then an administrator of A (the strongest role
there) asks for B's objects by id: the answer must be the one for an id that does
not exist (that lists do not show B's rows is test_access_lists.py's part).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from api.scope import family_of
from core.access import Role, allowed
from tests.integration.access_support import (
    INTEGER_IDS,
    LATER,
    SOON,
    World,
    api_request,
    fresh,
    world_fixture,  # noqa: F401 - the world fixture
)

pytestmark = pytest.mark.integration


# --- the routes ------------------------------------------------------------------------

Body = Callable[[World, str], Any]


def _csv(w: World, _role: str) -> bytes:
    return f"id,community_id,device_class\n{fresh('csv')},{w.a},fire\n".encode()


# (method, path template, body). Every /api/v1 route of the app must be here.
ROUTES: list[tuple[str, str, Body | None]] = [
    ("GET", "/communities", None),
    ("POST", "/communities", lambda w, r: {"id": fresh("c"), "name": "New"}),
    ("GET", "/communities/{community_id}", None),
    ("GET", "/communities/{community_id}/status", None),
    ("GET", "/communities/{community_id}/buildings", None),
    ("POST", "/communities/{community_id}/buildings", lambda w, r: {"id": fresh("b")}),
    ("GET", "/communities/{community_id}/buildings/{building_id}", None),
    (
        "POST",
        "/communities/{community_id}/buildings/{building_id}/units",
        lambda w, r: {"id": fresh("u")},
    ),
    ("GET", "/communities/{community_id}/aggregates?metric=battery", None),
    ("GET", "/communities/{community_id}/readings?metric=battery", None),
    ("GET", "/communities/{community_id}/latest", None),
    ("GET", "/communities/{community_id}/overview", None),
    ("GET", "/communities/{community_id}/figures", None),
    ("GET", "/devices", None),
    (
        "POST",
        "/devices",
        lambda w, r: {"id": fresh("d"), "community_id": w.a, "device_class": "fire"},
    ),
    ("POST", "/devices/import", _csv),
    ("GET", "/devices/{device_id}", None),
    ("PATCH", "/devices/{device_id}", lambda w, r: {"name": "Renamed"}),
    ("POST", "/devices/{device_id}/maintenance", None),
    ("POST", "/devices/{device_id}/activate", None),
    ("POST", "/devices/{device_id}/decommission", None),
    ("POST", "/devices/{device_id}/credentials", None),
    ("GET", "/devices/{device_id}/readings", None),
    ("GET", "/devices/{device_id}/events", None),
    ("GET", "/devices/{device_id}/aggregates?metric=battery", None),
    ("GET", "/devices/{device_id}/latest", None),
    ("GET", "/residents", None),
    (
        "POST",
        "/residents",
        lambda w, r: {"id": fresh("r"), "community_id": w.a, "name": "Mr Wang"},
    ),
    ("GET", "/residents/{resident_id}", None),
    ("PATCH", "/residents/{resident_id}", lambda w, r: {"address": "Flat 2"}),
    ("DELETE", "/residents/{resident_id}", None),
    ("GET", "/dead-letters", None),
    (
        "POST",
        "/visits",
        lambda w, r: {
            "resident_id": w.resident(w.a),
            "worker": "w1",
            "started_at": SOON,
            "outcome": "well",
        },
    ),
    ("GET", "/visits", None),
    ("POST", "/visits/policy", lambda w, r: {"resident_id": w.resident(w.a), "policy": "monthly"}),
    ("GET", "/visits/coverage?community_id={community_id}", None),
    ("GET", "/visits/follow-ups", None),
    ("GET", "/visits/alerts/{alert_id}", None),
    ("GET", "/communities/{community_id}/report?month=2026-11", None),
    ("GET", "/alerts", None),
    ("GET", "/alerts/{alert_id}", None),
    ("POST", "/alerts/{alert_id}/ack", lambda w, r: {"note": "on it"}),
    ("POST", "/alerts/{alert_id}/resolve", lambda w, r: {"note": "fixed"}),
    ("GET", "/maintenance", None),
    (
        "POST",
        "/maintenance",
        lambda w, r: {"community_id": w.a, "ends_at": SOON, "reason": "works"},
    ),
    ("DELETE", "/maintenance/{window_id}", None),
    ("GET", "/rules", None),
    ("POST", "/rules", lambda w, r: World.rule_body(w.a, fresh("rule"))),
    ("GET", "/rules/{rule_id}", None),
    ("PUT", "/rules/{rule_id}", None),  # body made from the path's id below
    ("POST", "/rules/{rule_id}/enable", None),
    ("POST", "/rules/{rule_id}/disable", None),
    ("DELETE", "/rules/{rule_id}", None),
    ("GET", "/webhooks", None),
    (
        "POST",
        "/webhooks",
        lambda w, r: {"url": "http://127.0.0.1:9/hook", "community_id": w.a},
    ),
    ("DELETE", "/webhooks/{webhook_id}", None),
    ("GET", "/webhooks/deliveries", None),
    ("POST", "/webhooks/deliveries/{delivery_id}/retry", None),
    ("GET", "/users", None),
    ("POST", "/users", lambda w, r: {"name": fresh("u"), "role": "viewer", "communities": [w.a]}),
    ("GET", "/users/{user_id}", None),
    ("PATCH", "/users/{user_id}", lambda w, r: {"role": "operator"}),
    ("GET", "/users/{user_id}/tokens", None),
    ("POST", "/users/{user_id}/tokens", lambda w, r: {"name": "script"}),
    ("DELETE", "/tokens/{token_id}", None),
    ("GET", "/me", None),
    ("GET", "/me/tokens", None),
    ("POST", "/me/tokens", lambda w, r: {"name": "laptop"}),
    ("DELETE", "/me/tokens/{token_id}", None),
    ("GET", "/audit", None),
    ("GET", "/responders", None),
    (
        "POST",
        "/responders",
        lambda w, r: {"id": fresh("p"), "community_id": w.a, "name": "Li", "role": "guard"},
    ),
    ("GET", "/responders/{responder_id}", None),
    (
        "POST",
        "/responders/{responder_id}/exceptions",
        lambda w, r: {"kind": "leave", "starts_at": SOON, "ends_at": LATER},
    ),
    ("GET", "/teams", None),
    (
        "POST",
        "/teams",
        lambda w, r: {"id": fresh("tm"), "community_id": w.a, "name": "T", "kind": "security"},
    ),
    ("GET", "/teams/{team_id}", None),
    (
        "POST",
        "/teams/{team_id}/shifts",
        lambda w, r: {
            "responder_id": w.responder(w.a),
            "weekdays": [0, 6],
            "starts": "20:00",
            "ends": "08:00",
        },
    ),
    ("GET", "/communities/{community_id}/duty", None),
    ("GET", "/communities/{community_id}/incident-targets", None),
    (
        "PUT",
        "/communities/{community_id}/incident-targets",
        lambda w, r: {
            "incident_type": "fire",
            "ack_s": 30,
            "dispatch_s": 60,
            "arrival_s": 120,
            "resolve_s": 1800,
        },
    ),
    ("GET", "/incidents", None),
    ("GET", "/incidents/{incident_id}", None),
    (
        "POST",
        "/incidents/{incident_id}/dispatch",
        lambda w, r: {"responder_ids": [w.responder(w.a)]},
    ),
    (
        "POST",
        "/incidents/{incident_id}/reassign",
        lambda w, r: {"from_responder_id": w.on_the_way(w.a), "to_responder_id": w.responder(w.a)},
    ),
    ("POST", "/incidents/{incident_id}/arrival", lambda w, r: {"responder_id": w.on_the_way(w.a)}),
    ("POST", "/incidents/{incident_id}/ack", None),
    ("POST", "/incidents/{incident_id}/resolve", lambda w, r: {"note": "out"}),
    ("POST", "/alerts/{alert_id}/dispatch", lambda w, r: {"responder_ids": [w.responder(w.a)]}),
    ("GET", "/me/dispatches", None),
    ("POST", "/me/dispatches/{dispatch_id}/received", None),
    ("POST", "/me/dispatches/{dispatch_id}/accept", None),
    ("POST", "/me/dispatches/{dispatch_id}/decline", None),
    ("POST", "/me/dispatches/{dispatch_id}/arrive", None),
]
_MAKERS: dict[str, str] = {
    "device_id": "device",
    "resident_id": "resident",
    "building_id": "building",
    "alert_id": "alert",
    "window_id": "window",
    "rule_id": "rule",
    "webhook_id": "webhook",
    "delivery_id": "delivery",
    "user_id": "user",
    "token_id": "token",
    "responder_id": "responder",
    "team_id": "team",
    "incident_id": "incident",
}


def _template(path: str) -> str:
    return path.split("?")[0]


def _fill(w: World, path: str, role: str, community: str) -> tuple[str, dict[str, str]]:
    ids: dict[str, str] = {"community_id": community}
    for name, maker in [*_MAKERS.items(), ("dispatch_id", "")]:
        if "{" + name + "}" in path:
            if name == "token_id" and path.startswith("/me/"):
                ids[name] = w.own_token(role)
            elif name == "dispatch_id":
                ids[name] = w.dispatch_to(community, w.user_ids[role])
            else:
                ids[name] = getattr(w, maker)(community)
    return path.format(**ids), ids


def test_the_matrix_covers_every_route(world: World) -> None:
    listed = {(m, "/api/v1" + _template(p)) for m, p, _ in ROUTES}
    app = {
        (method.upper(), path)
        for path, operations in world.client.get("/openapi.json").json()["paths"].items()
        if path.startswith("/api/v1/") and path != "/api/v1/alerts/stream"
        for method in operations
    }
    missing, gone = sorted(app - listed), sorted(listed - app)
    assert not missing, f"new routes: add each to ROUTES (with a valid body) -> {missing}"
    assert not gone, f"routes no longer in the app: remove from ROUTES -> {gone}"


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_role_matrix(world: World, role: str) -> None:
    """Every route: 2xx when the policy allows the role, 403 when not."""
    wrong: list[str] = []
    for method, template, body in ROUTES:
        family = family_of(_template(template))
        assert family is not None
        expected = allowed(Role(role), family, write=method not in ("GET", "HEAD"))
        path, ids = _fill(world, template, role, world.a)
        payload = body(world, role) if body is not None else None
        if method == "PUT" and "rule_id" in ids:
            payload = World.rule_body(world.a, ids["rule_id"])
        status, answer = api_request(world, method, path, payload, role)
        ok = 200 <= status < 300 if expected else status == 403
        if not ok:
            wrong.append(f"{method} {template}: {status} {answer} (allowed: {expected})")
    assert not wrong, "\n".join(wrong)


# --- across communities ------------------------------------------------------------------

# Routes that take an id of something in a community; A's administrator asks for B's.
# PUT of a rule creates the rule when the id is new: a taken id (in any community)
# cannot read like a free one there, as a taken device id cannot at registration.
PROBED = [
    (m, p)
    for m, p, _ in ROUTES
    if "{" in p and not p.startswith("/me/") and (m, p) != ("PUT", "/rules/{rule_id}")
]


def _normalised(answer: Any, ids: dict[str, str]) -> str:
    text = json.dumps(answer, sort_keys=True)
    for value in ids.values():
        text = text.replace(value, "<id>")
    return text


@pytest.mark.parametrize(("method", "template"), PROBED)
def test_another_communitys_object_looks_like_no_object(
    world: World, method: str, template: str
) -> None:
    body = next(b for m, p, b in ROUTES if (m, p) == (method, template))
    path_b, ids_b = _fill(world, template, "admin", world.b)
    missing: dict[str, str] = {}
    for name, value in ids_b.items():
        if name == "community_id":
            missing[name] = fresh("nope") if "{community_id}" in template else value
        else:
            missing[name] = "999999999" if name in INTEGER_IDS else fresh("nope")
    path_none = template.format(**missing)
    payload = body(world, "admin") if body is not None else None
    if method == "PUT":
        payload = None
    answers = []
    for path, ids in ((path_b, ids_b), (path_none, missing)):
        status, answer = api_request(world, method, path, payload, "admin")
        answers.append((status, _normalised(answer, ids)))
    assert answers[0] == answers[1]
    assert answers[0][0] in (404, 422), answers[0]
    # The root administrator sees B's object: it exists, so the 404 above was the scope.
    if method == "GET":
        status, _ = api_request(world, "GET", path_b, None, "root")
        assert status == 200, (path_b, status)


def test_b_objects_survive_the_probes(world: World) -> None:
    device = world.device(world.b)
    query = "SELECT state, mqtt_password_hash FROM devices WHERE id = %s"
    before = world.db.execute(query, (device,)).fetchone()
    for action in ("maintenance", "decommission", "credentials"):
        status, _ = api_request(world, "POST", f"/devices/{device}/{action}", None, "admin")
        assert status == 404
    status, _ = api_request(world, "PATCH", f"/devices/{device}", {"name": "x"}, "admin")
    assert status == 404
    after = world.db.execute(query, (device,)).fetchone()
    assert before == after
    assert after is not None
    assert after[0] == "active"


@pytest.mark.parametrize(
    "body",
    [
        lambda w, c: {"id": fresh("d"), "community_id": c, "device_class": "fire"},
    ],
)
def test_a_body_naming_another_community_reads_as_unknown(world: World, body: Body) -> None:
    answers = []
    for community in (world.b, fresh("nowhere")):
        status, answer = api_request(world, "POST", "/devices", body(world, community), "installer")
        answers.append((status, _normalised(answer, {"c": community})))
    assert answers[0] == answers[1]
    assert answers[0][0] == 422


def test_imports_naming_another_community_read_as_unknown(world: World) -> None:
    for community in (world.b, fresh("nowhere")):
        csv = f"id,community_id,device_class\n{fresh('d')},{community},fire\n".encode()
        status, answer = api_request(world, "POST", "/devices/import", csv, "installer")
        assert status == 422
        assert answer["errors"][0]["reason"] == f"unknown community {community!r}"
