"""The generated isolation matrix: every operation of the live OpenAPI, every role scoped
to community A, aimed at community B's objects with every spelling of their ids and
every spelling of the body's content type. Nothing may succeed (2xx) and nothing may
fail on our side (5xx); lists must not show anything of B.

New routes are covered without editing this file: the operations come from
``/openapi.json``, ids from B's objects by parameter name. A route whose body or
kind is not in EXPECTATIONS fails the test, so a new body shape gets a decision.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from fastapi.testclient import TestClient

from core.access import Role
from store.accounts import builtin_admin_id, create_token
from tests.integration.access_support import (
    INTEGER_IDS,
    LATER,
    SOON,
    World,
    fresh,
    populated_world,
)
from tests.integration.support import api_token_id

pytestmark = pytest.mark.integration

# Ways to write one integer id; all but the first are not ids at all (422), and none
# may reach another community's object.
INT_SPELLINGS: list[Callable[[str], str]] = [
    lambda v: v,
    lambda v: f"{v}.0",
    lambda v: f"0{v}",
    lambda v: f"+{v}",
    lambda v: f"{v}e0",
    lambda v: f"{v[0]}_{v[1:]}" if len(v) > 1 else f"{v}_0",
    lambda v: f" {v}",
    lambda v: f"{v}\x00",
    lambda v: f"{v}\n",
    lambda v: "78594884999228830062651375616",
]
TEXT_SPELLINGS: list[Callable[[str], str]] = [
    lambda v: v,
    lambda v: f" {v}",
    lambda v: f"{v}\x00",
    lambda v: f"{v}\n",
    lambda v: v.upper(),
]
CONTENT_TYPES: list[str | None] = [
    "application/json",
    "Application/JSON",
    "APPLICATION/JSON; charset=utf-8",
    "application/merge-patch+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    None,
]

Body = Callable[["Targets"], Any]
LIST = "list"  # no object of B in the request: must answer without showing B
STREAM = "stream"  # the live stream: tests/integration/test_security.py


def _new_in_b(prefix: str, **fields: Any) -> Body:
    """A body creating an object with a fresh id in community B."""
    return lambda t: {"id": fresh(prefix), "community_id": t.b, **fields}


@dataclass
class Targets:
    """Community B's objects, by path parameter name (several targets for some)."""

    a: str
    b: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    # Strings that appear only in B's data: none may show in an answer to A.
    secrets: list[str] = field(default_factory=list)


# (method, OpenAPI path) -> what to send. Bodies name B (or a user wider than A).
EXPECTATIONS: dict[tuple[str, str], Body | str] = {
    ("GET", "/communities"): LIST,
    ("POST", "/communities"): lambda t: {"id": t.b, "name": "Taken"},
    ("GET", "/communities/{community_id}"): LIST,
    ("GET", "/communities/{community_id}/status"): LIST,
    ("GET", "/communities/{community_id}/buildings"): LIST,
    ("POST", "/communities/{community_id}/buildings"): lambda t: {"id": fresh("b")},
    ("GET", "/communities/{community_id}/buildings/{building_id}"): LIST,
    ("POST", "/communities/{community_id}/buildings/{building_id}/units"): lambda t: {
        "id": fresh("u")
    },
    ("GET", "/communities/{community_id}/aggregates"): LIST,
    ("GET", "/communities/{community_id}/readings"): LIST,
    ("GET", "/communities/{community_id}/latest"): LIST,
    ("GET", "/communities/{community_id}/overview"): LIST,
    ("GET", "/communities/{community_id}/figures"): LIST,
    ("GET", "/communities/{community_id}/report"): LIST,
    ("GET", "/devices"): LIST,
    ("POST", "/devices"): _new_in_b("d", device_class="fire"),
    ("POST", "/devices/import"): lambda t: (
        f"id,community_id,device_class\n{fresh('d')},{t.b},fire\n"
    ),
    ("GET", "/devices/{device_id}"): LIST,
    ("PATCH", "/devices/{device_id}"): lambda t: {"name": "Renamed"},
    ("POST", "/devices/{device_id}/maintenance"): lambda t: None,
    ("POST", "/devices/{device_id}/activate"): lambda t: None,
    ("POST", "/devices/{device_id}/decommission"): lambda t: None,
    ("POST", "/devices/{device_id}/credentials"): lambda t: None,
    ("GET", "/devices/{device_id}/readings"): LIST,
    ("GET", "/devices/{device_id}/events"): LIST,
    ("GET", "/devices/{device_id}/aggregates"): LIST,
    ("GET", "/devices/{device_id}/latest"): LIST,
    ("GET", "/residents"): LIST,
    ("POST", "/residents"): _new_in_b("r", name="X"),
    ("GET", "/residents/{resident_id}"): LIST,
    ("PATCH", "/residents/{resident_id}"): lambda t: {"address": "Flat 2", "contacts": None},
    ("DELETE", "/residents/{resident_id}"): lambda t: None,
    ("GET", "/dead-letters"): LIST,
    ("POST", "/visits"): lambda t: {
        "resident_id": t.ids["resident_id"][0],
        "worker": "w1",
        "started_at": SOON,
        "outcome": "well",
    },
    ("GET", "/visits"): LIST,
    ("POST", "/visits/policy"): lambda t: {
        "resident_id": t.ids["resident_id"][0],
        "policy": "monthly",
    },
    ("GET", "/visits/coverage"): LIST,
    ("GET", "/visits/follow-ups"): LIST,
    ("GET", "/visits/alerts/{alert_id}"): LIST,
    ("GET", "/alerts"): LIST,
    ("GET", "/alerts/stream"): STREAM,
    ("GET", "/alerts/{alert_id}"): LIST,
    ("POST", "/alerts/{alert_id}/ack"): lambda t: {"note": "on it"},
    ("POST", "/alerts/{alert_id}/resolve"): lambda t: {"note": "fixed"},
    ("GET", "/maintenance"): LIST,
    ("POST", "/maintenance"): lambda t: {"community_id": t.b, "ends_at": SOON, "reason": "x"},
    ("DELETE", "/maintenance/{window_id}"): lambda t: None,
    ("GET", "/rules"): LIST,
    ("POST", "/rules"): lambda t: World.rule_body(t.b, fresh("rule")),
    ("GET", "/rules/{rule_id}"): LIST,
    ("PUT", "/rules/{rule_id}"): lambda t: World.rule_body(t.b, t.ids["rule_id"][0]),
    ("POST", "/rules/{rule_id}/enable"): lambda t: None,
    ("POST", "/rules/{rule_id}/disable"): lambda t: None,
    ("DELETE", "/rules/{rule_id}"): lambda t: None,
    ("GET", "/webhooks"): LIST,
    ("POST", "/webhooks"): lambda t: {"url": "http://127.0.0.1:9/hook", "community_id": t.b},
    ("DELETE", "/webhooks/{webhook_id}"): lambda t: None,
    ("GET", "/webhooks/deliveries"): LIST,
    ("POST", "/webhooks/deliveries/{delivery_id}/retry"): lambda t: None,
    ("GET", "/users"): LIST,
    ("POST", "/users"): lambda t: {"name": fresh("u"), "role": "admin", "communities": [t.b]},
    ("GET", "/users/{user_id}"): LIST,
    ("PATCH", "/users/{user_id}"): lambda t: {"role": "viewer"},
    ("GET", "/users/{user_id}/tokens"): LIST,
    ("POST", "/users/{user_id}/tokens"): lambda t: {"name": "takeover"},
    ("DELETE", "/tokens/{token_id}"): lambda t: None,
    ("GET", "/me"): LIST,
    ("GET", "/me/tokens"): LIST,
    ("POST", "/me/tokens"): LIST,  # the caller's own: nothing of B involved
    ("DELETE", "/me/tokens/{token_id}"): lambda t: None,
    ("GET", "/audit"): LIST,
    ("GET", "/responders"): LIST,
    ("POST", "/responders"): _new_in_b("p", name="X", role="guard"),
    ("GET", "/responders/{responder_id}"): LIST,
    ("POST", "/responders/{responder_id}/exceptions"): lambda t: {
        "kind": "leave",
        "starts_at": SOON,
        "ends_at": LATER,
    },
    ("GET", "/teams"): LIST,
    ("POST", "/teams"): _new_in_b("tm", name="T", kind="security"),
    ("GET", "/teams/{team_id}"): LIST,
    ("POST", "/teams/{team_id}/shifts"): lambda t: {
        "responder_id": t.ids["responder_id"][0],
        "weekdays": [0],
        "starts": "08:00",
        "ends": "20:00",
    },
    ("GET", "/communities/{community_id}/duty"): LIST,
    ("GET", "/communities/{community_id}/incident-targets"): LIST,
    ("PUT", "/communities/{community_id}/incident-targets"): lambda t: {
        "incident_type": "fire",
        "ack_s": 1,
        "dispatch_s": 1,
        "arrival_s": 1,
        "resolve_s": 1,
    },
    ("GET", "/incidents"): LIST,
    ("GET", "/incidents/{incident_id}"): LIST,
    ("POST", "/incidents/{incident_id}/dispatch"): lambda t: {
        "responder_ids": [t.ids["responder_id"][0]]
    },
    ("POST", "/incidents/{incident_id}/reassign"): lambda t: {
        "from_responder_id": t.ids["responder_id"][0],
        "to_responder_id": t.ids["responder_id"][0],
    },
    ("POST", "/incidents/{incident_id}/arrival"): lambda t: {
        "responder_id": t.ids["responder_id"][0]
    },
    ("POST", "/incidents/{incident_id}/ack"): lambda t: None,
    ("POST", "/incidents/{incident_id}/resolve"): lambda t: {"note": "x"},
    ("POST", "/alerts/{alert_id}/dispatch"): lambda t: {
        "responder_ids": [t.ids["responder_id"][0]]
    },
    ("GET", "/me/dispatches"): LIST,  # the caller's own
    ("POST", "/me/dispatches/{dispatch_id}/received"): lambda t: None,
    ("POST", "/me/dispatches/{dispatch_id}/accept"): lambda t: None,
    ("POST", "/me/dispatches/{dispatch_id}/decline"): lambda t: None,
    ("POST", "/me/dispatches/{dispatch_id}/arrive"): lambda t: None,
}
# Queries some operations need to be more than a 422 (so the scope is what answers).
QUERIES: dict[str, dict[str, str]] = {
    "/communities/{community_id}/aggregates": {"metric": "battery"},
    "/communities/{community_id}/readings": {"metric": "battery"},
    "/devices/{device_id}/aggregates": {"metric": "battery"},
    "/communities/{community_id}/report": {"month": "2026-11"},
}


@dataclass
class Matrix:
    client: TestClient
    db: psycopg.Connection[Any]
    targets: Targets
    tokens: dict[str, str]
    root: str


@pytest.fixture(scope="module")
def matrix(database_url: str) -> Iterator[Matrix]:
    with populated_world(database_url, "isolation") as (w, root):
        db = w.db
        tokens = dict(w.tokens)
        b_user = w.user(w.b)
        b_token = create_token(db, "b's", user_id=int(b_user))
        root_id = str(builtin_admin_id(db))
        targets = Targets(w.a, w.b)
        device, resident = w.device(w.b), w.resident(w.b)
        # An alert of B's device, so that /visits/alerts/{id} has a resident to show.
        db.execute("UPDATE devices SET resident_id = %s WHERE id = %s", (resident, device))
        alert = w.alert(w.b)
        db.execute("UPDATE alerts SET device_id = %s WHERE id = %s", (device, int(alert)))
        targets.ids = {
            "community_id": [w.b],
            "device_id": [device],
            "resident_id": [resident],
            "building_id": [w.building(w.b)],
            "alert_id": [alert],
            "window_id": [w.window(w.b)],
            "rule_id": [w.rule(w.b)],
            "webhook_id": [w.webhook(w.b)],
            "delivery_id": [w.delivery(w.b)],
            # B's user, and the administrator of every community (the takeover target).
            "user_id": [b_user, root_id],
            "token_id": [str(api_token_id(db, b_token)), str(api_token_id(db, root))],
            "responder_id": [w.responder(w.b)],
            "team_id": [w.team(w.b)],
            "incident_id": [w.incident(w.b)],
            # A dispatch to B's responder who is B's user.
            "dispatch_id": [w.dispatch_to(w.b, int(b_user))],
        }
        targets.secrets = [
            w.b,
            device,
            resident,
            *targets.ids["rule_id"],
            *targets.ids["building_id"],
            *targets.ids["responder_id"],
            *targets.ids["team_id"],
            w.on_way[w.b],
            b_token,
            "Mrs Li",  # B's resident's name (A has no resident of that name here)
        ]
        yield Matrix(w.client, db, targets, tokens, root)


def _operations(client: TestClient) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return sorted(
        (method.upper(), path.removeprefix("/api/v1"))
        for path, operations in paths.items()
        if path.startswith("/api/v1/")
        for method in operations
    )


def _names(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{")]


def _spelled_paths(template: str, targets: Targets) -> Iterator[tuple[str, bool]]:
    """(path, canonical) for every target and spelling of every id in the template."""
    names = _names(template)
    choices: list[list[tuple[str, bool]]] = []
    for name in names:
        spellings = INT_SPELLINGS if name in INTEGER_IDS else TEXT_SPELLINGS
        options = []
        for value in targets.ids[name]:
            for i, spell in enumerate(spellings):
                options.append((quote(spell(value), safe=""), i == 0))
        choices.append(options)
    for combo in itertools.product(*choices) if choices else [()]:
        path = template
        for name, (value, _) in zip(names, combo, strict=True):
            path = path.replace("{" + name + "}", value)
        yield path, all(canonical for _, canonical in combo)


def _send(
    m: Matrix,
    role: str,
    method: str,
    path: str,
    body: Any,
    content_type: str | None,
    query: dict[str, str],
) -> Any:
    headers = {"Authorization": f"Bearer {m.tokens[role]}"}
    content: bytes | None = None
    if body is not None:
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        if content_type is not None:
            headers["Content-Type"] = content_type
    return m.client.request(
        method, "/api/v1" + path, headers=headers, content=content, params=query
    )


def test_every_operation_has_an_expectation(matrix: Matrix) -> None:
    operations = set(_operations(matrix.client))
    missing = sorted(operations - set(EXPECTATIONS))
    gone = sorted(set(EXPECTATIONS) - operations)
    assert not missing, f"new operations: decide what B-aimed request to send -> {missing}"
    assert not gone, f"operations no longer in the API -> {gone}"


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_nothing_of_b_for_any_role_of_a(matrix: Matrix, role: str) -> None:
    problems: list[str] = []
    targets = matrix.targets
    for method, template in _operations(matrix.client):
        expectation = EXPECTATIONS.get((method, template))
        if expectation is None or expectation == STREAM:
            continue  # the test above fails for it
        body = None if isinstance(expectation, str) else expectation(targets)
        for path, canonical in _spelled_paths(template, targets):
            # Every content-type spelling with the canonical ids; JSON with the others.
            types = CONTENT_TYPES if canonical and body is not None else ["application/json"]
            for content_type in types:
                if template == "/devices/import" and content_type == "application/json":
                    content_type = "text/csv"
                query = QUERIES.get(template, {})
                response = _send(matrix, role, method, path, body, content_type, query)
                status, text = response.status_code, response.text
                where = f"{role} {method} {path!r} [{content_type}]: {status} {text[:200]}"
                if status >= 500:
                    problems.append("server error: " + where)
                elif 200 <= status < 300:
                    if expectation != LIST or "{" in template:
                        problems.append("succeeded: " + where)
                    leaked = [s for s in targets.secrets if s in text]
                    if leaked:
                        problems.append(f"leaked {leaked}: " + where)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def test_lists_filtered_by_b_show_nothing_of_b(matrix: Matrix) -> None:
    """A's roles name B in a list's community filter: empty (or refused), never B's."""
    problems = []
    for method, template in _operations(matrix.client):
        if method != "GET" or "{" in template or EXPECTATIONS.get((method, template)) != LIST:
            continue
        for role in matrix.tokens:
            response = matrix.client.get(
                "/api/v1" + template,
                headers={"Authorization": f"Bearer {matrix.tokens[role]}"},
                params={"community_id": matrix.targets.b},
            )
            if response.status_code >= 500:
                problems.append(f"{role} {template}: {response.status_code}")
            leaked = [s for s in matrix.targets.secrets if s in response.text]
            if leaked and response.status_code < 300:
                problems.append(f"{role} {template}: leaked {leaked}")
    assert not problems, "\n".join(problems)


def test_the_targets_are_real(matrix: Matrix) -> None:
    """The matrix can fail: the administrator of every community reaches each target."""
    for method, template in _operations(matrix.client):
        if method != "GET" or "{" not in template or template == "/alerts/stream":
            continue
        for path, canonical in _spelled_paths(template, matrix.targets):
            if not canonical:
                continue
            response = matrix.client.get(
                "/api/v1" + path,
                headers={"Authorization": f"Bearer {matrix.root}"},
                params=QUERIES.get(template, {}),
            )
            assert response.status_code == 200, (path, response.status_code, response.text)
