"""Who may do what, and see what: every role against every API route, and probes across
communities that must be answered exactly as for things that do not exist.

Two communities, A and B. Each role has a user scoped to A. Every route of the
API is called by every role on fresh objects of A: a role the policy allows must
succeed (2xx), any other gets 403. Then an administrator of A (the strongest role
there) asks for B's objects by id: the answer must be the one for an id that does
not exist, and lists must not show B's rows.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api.app import create_app
from api.scope import family_of
from core.access import Role, allowed
from core.registry import DeviceSpec
from core.rules import dump_rule, parse_rule
from core.settings import Settings
from store.accounts import create_token, create_user
from store.devices import register_device
from tests.integration.support import api_token_id, one_row

pytestmark = pytest.mark.integration

_counter = itertools.count()
SOON = (datetime.now(UTC) + timedelta(days=1)).isoformat()
LATER = (datetime.now(UTC) + timedelta(days=2)).isoformat()


# Path parameters that are integer ids (the others are text).
INTEGER_IDS = {
    "alert_id",
    "window_id",
    "webhook_id",
    "delivery_id",
    "user_id",
    "token_id",
    "incident_id",
    "dispatch_id",
}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}-{next(_counter)}"


@dataclass
class World:
    client: TestClient
    db: psycopg.Connection[Any]
    a: str
    b: str
    tokens: dict[str, str] = field(default_factory=dict)  # role (scoped to A) -> token
    user_ids: dict[str, int] = field(default_factory=dict)
    on_way: dict[str, str] = field(default_factory=dict)  # community -> responder sent
    responder_of: dict[int, str] = field(default_factory=dict)  # user id -> responder

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def populate(self, label: str) -> str:
        """Communities A and B, a user and token of every role scoped to A; the root token."""
        for community in (self.a, self.b):
            self.db.execute(
                "INSERT INTO communities (id, name) VALUES (%s, %s)", (community, community)
            )
        for role in Role:
            user = create_user(self.db, fresh(role.value), role, [self.a])
            self.user_ids[role.value] = user.id
            self.tokens[role.value] = create_token(self.db, label, user_id=user.id)
        return create_token(self.db, f"{label} root")  # the built-in admin: everywhere

    # --- objects, made directly in the database ---

    def device(self, community: str) -> str:
        spec = DeviceSpec(id=fresh("d"), community_id=community, device_class="wearable")
        outcome = register_device(self.db, spec, visible=lambda _c: True, installed_by="test")
        assert isinstance(outcome, tuple), outcome
        return spec.id

    def resident(self, community: str) -> str:
        resident_id = fresh("r")
        self.db.execute(
            "INSERT INTO residents (id, community_id, name) VALUES (%s, %s, 'Mrs Li')",
            (resident_id, community),
        )
        return resident_id

    def building(self, community: str) -> str:
        building_id = fresh("b")
        self.db.execute(
            "INSERT INTO buildings (community_id, id) VALUES (%s, %s)", (community, building_id)
        )
        return building_id

    def alert(self, community: str) -> str:
        now = datetime.now(UTC)
        row = one_row(
            self.db,
            "INSERT INTO alerts (rule_id, subject, community_id, rule_type, severity,"
            " initial_severity, state, title, first_seen, last_seen, raised_at)"
            " VALUES (%s, %s, %s, 'threshold', 'major', 'major', 'open', 'Hot', %s, %s, %s)"
            " RETURNING id",
            (fresh("rule"), fresh("device:x"), community, now, now, now),
        )
        return str(row[0])

    def window(self, community: str) -> str:
        row = one_row(
            self.db,
            "INSERT INTO maintenance_windows (community_id, starts_at, ends_at, reason,"
            " created_by) VALUES (%s, now(), now() + interval '1 day', 'test', 'test')"
            " RETURNING id",
            (community,),
        )
        return str(row[0])

    def rule(self, community: str) -> str:
        rule = self.rule_body(community, fresh("rule"))
        self.db.execute(
            "INSERT INTO alert_rules (id, definition) VALUES (%s, %s)",
            (rule["id"], Jsonb(rule)),
        )
        return str(rule["id"])

    @staticmethod
    def rule_body(community: str, rule_id: str) -> dict[str, Any]:
        rule = parse_rule(
            {
                "id": rule_id,
                "type": "threshold",
                "title": "Low battery",
                "severity": "warning",
                "metric": "battery",
                "op": "<",
                "raise": 10,
                "scope": {"community": community},
            }
        )
        return dump_rule(rule)

    def webhook(self, community: str) -> str:
        row = one_row(
            self.db,
            "INSERT INTO webhooks (url, secret, community_id)"
            " VALUES ('http://127.0.0.1:9/hook', 'secret-secret-secret', %s) RETURNING id",
            (community,),
        )
        return str(row[0])

    def delivery(self, community: str) -> str:
        row = one_row(
            self.db,
            "INSERT INTO webhook_deliveries (webhook_id, alert_id, payload, state)"
            " VALUES (%s, %s, '{}', 'dead') RETURNING id",
            (int(self.webhook(community)), int(self.alert(community))),
        )
        return str(row[0])

    def user(self, community: str) -> str:
        return str(create_user(self.db, fresh("u"), Role.VIEWER, [community]).id)

    def responder(self, community: str, user_id: int | None = None) -> str:
        responder_id = fresh("p")
        self.db.execute(
            "INSERT INTO responders (id, community_id, name, role, phone, user_id)"
            " VALUES (%s, %s, 'Guard Zhang', 'guard', '13800000000', %s)",
            (responder_id, community, user_id),
        )
        return responder_id

    def team(self, community: str) -> str:
        team_id = fresh("tm")
        self.db.execute(
            "INSERT INTO teams (id, community_id, name, kind)"
            " VALUES (%s, %s, 'Guards', 'security')",
            (team_id, community),
        )
        return team_id

    def on_the_way(self, community: str) -> str:
        """The responder every incident made here has already been sent."""
        if community not in self.on_way:
            self.on_way[community] = self.responder(community)
        return self.on_way[community]

    def incident(self, community: str, responder: str | None = None) -> str:
        row = one_row(
            self.db,
            "INSERT INTO incidents (community_id, incident_type, title, opened_at)"
            " VALUES (%s, 'fire', 'Fire', now()) RETURNING id",
            (community,),
        )
        self.db.execute(
            "INSERT INTO dispatches (incident_id, community_id, responder_id, dispatched_at,"
            " dispatched_by) VALUES (%s, %s, %s, now(), 'test')",
            (row[0], community, responder or self.on_the_way(community)),
        )
        return str(row[0])

    def dispatch_to(self, community: str, user_id: int) -> str:
        """A dispatch to the responder record of this user (made on first use)."""
        if user_id not in self.responder_of:
            self.responder_of[user_id] = self.responder(community, user_id)
        incident = self.incident(community, self.responder_of[user_id])
        row = one_row(self.db, "SELECT id FROM dispatches WHERE incident_id = %s", (int(incident),))
        return str(row[0])

    def token(self, community: str) -> str:
        return self._token_of(int(self.user(community)))

    def own_token(self, role: str) -> str:
        return self._token_of(self.user_ids[role])

    def _token_of(self, user_id: int) -> str:
        return str(api_token_id(self.db, create_token(self.db, fresh("t"), user_id=user_id)))


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    settings = Settings(database_url=database_url)
    with (
        TestClient(create_app(settings)) as client,
        psycopg.connect(database_url, autocommit=True) as db,
    ):
        w = World(client, db, fresh("ca"), fresh("cb"))
        w.tokens["root"] = w.populate("matrix")
        yield w


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


def _request(w: World, method: str, path: str, body: Any, role: str) -> tuple[int, Any]:
    headers = w.headers(role)
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs["content"] = body
        headers = {**headers, "Content-Type": "text/csv"}
    elif body is not None:
        kwargs["json"] = body
    response = w.client.request(method, "/api/v1" + path, headers=headers, **kwargs)
    try:
        payload = response.json()
    except json.JSONDecodeError:
        payload = None
    return response.status_code, payload


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
        status, answer = _request(world, method, path, payload, role)
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
        status, answer = _request(world, method, path, payload, "admin")
        answers.append((status, _normalised(answer, ids)))
    assert answers[0] == answers[1]
    assert answers[0][0] in (404, 422), answers[0]
    # The root administrator sees B's object: it exists, so the 404 above was the scope.
    if method == "GET":
        status, _ = _request(world, "GET", path_b, None, "root")
        assert status == 200, (path_b, status)


def test_b_objects_survive_the_probes(world: World) -> None:
    device = world.device(world.b)
    query = "SELECT state, mqtt_password_hash FROM devices WHERE id = %s"
    before = world.db.execute(query, (device,)).fetchone()
    for action in ("maintenance", "decommission", "credentials"):
        status, _ = _request(world, "POST", f"/devices/{device}/{action}", None, "admin")
        assert status == 404
    status, _ = _request(world, "PATCH", f"/devices/{device}", {"name": "x"}, "admin")
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
        status, answer = _request(world, "POST", "/devices", body(world, community), "installer")
        answers.append((status, _normalised(answer, {"c": community})))
    assert answers[0] == answers[1]
    assert answers[0][0] == 422


def test_imports_naming_another_community_read_as_unknown(world: World) -> None:
    for community in (world.b, fresh("nowhere")):
        csv = f"id,community_id,device_class\n{fresh('d')},{community},fire\n".encode()
        status, answer = _request(world, "POST", "/devices/import", csv, "installer")
        assert status == 422
        assert answer["errors"][0]["reason"] == f"unknown community {community!r}"


LISTS = [
    ("viewer", "/communities", "id"),
    ("viewer", "/devices", "community_id"),
    ("operator", "/residents", "community_id"),
    ("viewer", "/alerts", "community_id"),
    ("viewer", "/maintenance", "community_id"),
    ("admin", "/webhooks", "community_id"),
    ("admin", "/audit", "community_id"),
]


@pytest.mark.parametrize(("role", "path", "column"), LISTS)
def test_lists_show_only_the_users_communities(
    world: World, role: str, path: str, column: str
) -> None:
    for community in (world.a, world.b):  # something of each in every list
        world.device(community)
        world.resident(community)
        world.alert(community)
        world.window(community)
        world.webhook(community)
    status, answer = _request(world, "GET", path, None, role)
    assert status == 200
    rows = answer["data"] if isinstance(answer, dict) else answer
    seen = {row[column] for row in rows}
    assert world.a in seen
    assert world.b not in seen
    # Asking for B by name is answered as for a community that does not exist.
    if path not in ("/communities", "/webhooks", "/audit"):
        for community in (world.b, fresh("nowhere")):
            status, answer = _request(world, "GET", f"{path}?community_id={community}", None, role)
            assert status == 200
            rows = answer["data"] if isinstance(answer, dict) else answer
            assert rows == []


def test_rules_of_another_community_are_not_listed(world: World) -> None:
    mine, theirs = world.rule(world.a), world.rule(world.b)
    status, answer = _request(world, "GET", "/rules", None, "viewer")
    assert status == 200
    ids = {rule["id"] for rule in answer}
    assert mine in ids
    assert theirs not in ids


def test_dead_letters_of_another_community_are_not_listed(world: World) -> None:
    for community in (world.a, world.b):
        world.db.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason, detail)"
            " VALUES (now(), %s, 'x', 'unknown_device', 'test')",
            (f"community/{community}/fire/{fresh('d')}/telemetry",),
        )
    status, answer = _request(world, "GET", "/dead-letters?limit=1000", None, "installer")
    assert status == 200
    topics = [row["topic"] for row in answer["data"]]
    assert any(f"community/{world.a}/" in t for t in topics)
    assert not any(f"community/{world.b}/" in t for t in topics)


def test_users_of_other_communities_are_not_listed(world: World) -> None:
    theirs = world.user(world.b)
    nobodys = str(create_user(world.db, fresh("u"), Role.VIEWER, []).id)
    status, answer = _request(world, "GET", "/users?limit=1000", None, "admin")
    assert status == 200
    ids = {str(u["id"]) for u in answer["data"]}
    assert str(world.user_ids["viewer"]) in ids
    assert theirs not in ids
    assert nobodys not in ids
    assert _request(world, "GET", f"/users/{nobodys}", None, "admin")[0] == 404
    # A scoped administrator cannot hand out another community, nor every community.
    for body in (
        {"name": fresh("u"), "role": "admin", "communities": [world.b]},
        {"name": fresh("u"), "role": "admin", "all_communities": True},
    ):
        status, _ = _request(world, "POST", "/users", body, "admin")
        assert status in (403, 422)
