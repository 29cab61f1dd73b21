"""Two communities, A and B, and users of every role scoped to A, behind the API:
the world the access and isolation tests probe."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.abc import Params, QueryNoTemplate
from psycopg.types.json import Jsonb

from api.app import create_app
from core.access import Role
from core.registry import DeviceSpec
from core.rules import dump_rule, parse_rule
from core.settings import Settings
from store.accounts import create_token, create_user
from store.devices import register_device
from tests.integration.support import api_token_id, one_row

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

    def _id_of(self, query: QueryNoTemplate, params: Params) -> str:
        """The id the one row of ``query`` holds, as a string (as the API's paths take it)."""
        return str(one_row(self.db, query, params)[0])

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
        return self._id_of(
            "INSERT INTO alerts (rule_id, subject, community_id, rule_type, severity,"
            " initial_severity, state, title, first_seen, last_seen, raised_at)"
            " VALUES (%s, %s, %s, 'threshold', 'major', 'major', 'open', 'Hot', %s, %s, %s)"
            " RETURNING id",
            (fresh("rule"), fresh("device:x"), community, now, now, now),
        )

    def window(self, community: str) -> str:
        return self._id_of(
            "INSERT INTO maintenance_windows (community_id, starts_at, ends_at, reason,"
            " created_by) VALUES (%s, now(), now() + interval '1 day', 'test', 'test')"
            " RETURNING id",
            (community,),
        )

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
        return self._id_of(
            "INSERT INTO webhooks (url, secret, community_id)"
            " VALUES ('http://127.0.0.1:9/hook', 'secret-secret-secret', %s) RETURNING id",
            (community,),
        )

    def delivery(self, community: str) -> str:
        return self._id_of(
            "INSERT INTO webhook_deliveries (webhook_id, alert_id, payload, state)"
            " VALUES (%s, %s, '{}', 'dead') RETURNING id",
            (int(self.webhook(community)), int(self.alert(community))),
        )

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
        return self._id_of("SELECT id FROM dispatches WHERE incident_id = %s", (int(incident),))

    def token(self, community: str) -> str:
        return self._token_of(int(self.user(community)))

    def own_token(self, role: str) -> str:
        return self._token_of(self.user_ids[role])

    def _token_of(self, user_id: int) -> str:
        return str(api_token_id(self.db, create_token(self.db, fresh("t"), user_id=user_id)))


def api_request(w: World, method: str, path: str, body: Any, role: str) -> tuple[int, Any]:
    """``method`` on the API as ``role``; its status and JSON answer (None if not JSON)."""
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


@contextmanager
def api_and_db(database_url: str) -> Iterator[tuple[TestClient, psycopg.Connection[Any]]]:
    """The app on ``database_url`` and an autocommit connection to arrange its rows."""
    with (
        TestClient(create_app(Settings(database_url=database_url))) as client,
        psycopg.connect(database_url, autocommit=True) as db,
    ):
        yield client, db


@contextmanager
def populated_world(database_url: str, label: str) -> Iterator[tuple[World, str]]:
    """A populated World on ``database_url`` and the root administrator's token."""
    with api_and_db(database_url) as (client, db):
        w = World(client, db, fresh("ca"), fresh("cb"))
        yield w, w.populate(label)


@pytest.fixture(name="world", scope="module")
def world_fixture(database_url: str) -> Iterator[World]:
    """The World of one test file; the root administrator's token is its "root" token."""
    with populated_world(database_url, "matrix") as (w, root):
        w.tokens["root"] = root
        yield w
