"""Community isolation beyond the matrix: row-level security on its own, users and
tokens, content types, hostile input, the audit of refusals, webhook destinations,
/metrics, and the live stream after revocation (docs/security.md)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from api.app import create_app
from core.access import Role
from core.settings import AlertSettings, ApiSettings, Settings
from core.tokens import hash_token
from store.accounts import builtin_admin_id, create_token, create_user
from store.rollups import rebuild_rollups
from tests.integration.access_support import SOON, World, fresh, populated_world
from tests.integration.alerts_support import T0, setup_devices
from tests.integration.support import api_token_id, one_row
from tests.integration.test_alerts_api import raise_alert
from tests.servers import running_api

pytestmark = pytest.mark.integration


@dataclass
class Two:
    """Communities A and B; tokens of roles scoped to A, and of the root administrator."""

    w: World
    tokens: dict[str, str]
    root: str

    def auth(self, who: str) -> dict[str, str]:
        token = self.root if who == "root" else self.tokens[who]
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def two(module_database_url: str) -> Iterator[Two]:
    # A database of this file's own: it adds a global webhook, which every alert of
    # the end-to-end files after it on this worker would be posted to.
    with populated_world(module_database_url, "security") as (w, root):
        yield Two(w, dict(w.tokens), root)


# --- row-level security, with the route-level checks switched off -------------------------


@pytest.fixture
def without_object_checks(two: Two) -> Iterator[Two]:
    app = two.w.client.app
    app.state.test_without_object_checks = True  # type: ignore[attr-defined]
    try:
        yield two
    finally:
        app.state.test_without_object_checks = False  # type: ignore[attr-defined]


def test_the_api_queries_as_a_role_subject_to_row_level_security(two: Two) -> None:
    pool = two.w.client.app.state.pool  # type: ignore[attr-defined]
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT current_user, r.rolbypassrls, r.rolsuper FROM pg_roles AS r"
            " WHERE r.rolname = current_user"
        ).fetchone()
    assert row == ("sc_api", False, False)


def test_row_level_security_alone_keeps_b_out(without_object_checks: Two) -> None:
    two = without_object_checks
    w = two.w
    alert, device, webhook = w.alert(w.b), w.device(w.b), w.webhook(w.b)
    resident = w.resident(w.b)
    admin = two.auth("admin")
    # The hook is on: the same request that the object check answers with 404 now
    # reaches the route, whose own query finds nothing of B.
    assert w.client.get(f"/api/v1/alerts/{alert}", headers=admin).status_code == 404
    assert w.client.get(f"/api/v1/devices/{device}", headers=admin).status_code == 404
    assert w.client.get(f"/api/v1/residents/{resident}", headers=admin).status_code == 404
    assert w.client.post(f"/api/v1/alerts/{alert}/ack", headers=admin).status_code == 404
    assert w.client.delete(f"/api/v1/webhooks/{webhook}", headers=admin).status_code == 404
    listed = w.client.get("/api/v1/alerts", headers=admin, params={"community_id": w.b})
    assert listed.status_code == 200
    assert listed.json()["data"] == []
    made = w.client.post(
        "/api/v1/maintenance",
        headers=admin,
        json={"community_id": w.b, "ends_at": SOON, "reason": "rls"},
    )
    assert made.status_code == 404
    state = w.db.execute("SELECT state FROM alerts WHERE id = %s", (int(alert),)).fetchone()
    assert state == ("open",)
    kept = w.db.execute("SELECT count(*) FROM webhooks WHERE id = %s", (int(webhook),)).fetchone()
    assert kept == (1,)
    windows = w.db.execute(
        "SELECT count(*) FROM maintenance_windows WHERE reason = 'rls'"
    ).fetchone()
    assert windows == (0,)
    # And the hook really is what let the requests through: B's root sees the alert.
    assert w.client.get(f"/api/v1/alerts/{alert}", headers=two.auth("root")).status_code == 200


def _reading_and_event(w: World, device: str, at: datetime) -> None:
    """A reading and an event of ``device`` at ``at``, stored as the pipeline would."""
    w.db.execute(
        "INSERT INTO readings (device_id, metric, ts, value, seq, received_at)"
        " VALUES (%s, 'heart_rate', %s, 72, 1, %s)",
        (device, at, at),
    )
    w.db.execute(
        "INSERT INTO device_events (device_id, ts, event, data, seq, received_at)"
        " VALUES (%s, %s, 'fall_detected', '{}', 2, %s)",
        (device, at, at),
    )


def _series_of(w: World, device: str, community: str) -> None:
    """A reading, an event and a dead letter of ``device``, stored as the pipeline would."""
    now = datetime.now(UTC)
    _reading_and_event(w, device, now)
    w.db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, detail)"
        " VALUES (%s, %s, '', 'bad_json', 'rls')",
        (now, f"community/{community}/wearable/{device}/telemetry"),
    )


_SERIES_SEEN = """
SELECT (SELECT count(*) FROM readings WHERE device_id = %(d)s),
       (SELECT count(*) FROM device_events WHERE device_id = %(d)s),
       (SELECT count(*) FROM readings_1h WHERE device_id = %(d)s),
       (SELECT count(*) FROM dead_letters WHERE split_part(topic, '/', 4) = %(d)s)
"""


def test_row_level_security_alone_keeps_b_series_out(without_object_checks: Two) -> None:
    """readings, device_events (and the readings_1h view over them) and dead_letters
    have policies of their own (migration 0008): with the route checks off, nothing of
    B's device comes back through the API, nor to any query the API's role runs."""
    two = without_object_checks
    w = two.w
    device = w.device(w.b)
    _series_of(w, device, w.b)
    admin, root = two.auth("admin"), two.auth("root")
    window = {
        "start": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "end": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    routes = [
        (f"/api/v1/devices/{device}/readings", window),
        (f"/api/v1/devices/{device}/events", window),
        (f"/api/v1/devices/{device}/aggregates", {"metric": "heart_rate", "bucket": "1m"}),
        (f"/api/v1/devices/{device}/aggregates", {"metric": "heart_rate", "bucket": "1h"}),
    ]
    for path, params in routes:
        seen = w.client.get(path, headers=admin, params=params)
        assert seen.status_code == 404, (path, seen.text)
        # The hook really is what let the request through: B's root gets the data.
        assert w.client.get(path, headers=root, params=params).json()["data"], path
    letters = w.client.get("/api/v1/dead-letters", headers=admin, params={"device": device})
    assert letters.status_code == 200
    assert letters.json()["data"] == []
    # Past every route: the very role and scope the API's requests run with, on
    # either storage path (policies on plain PostgreSQL, scoped views on TimescaleDB).
    pool = w.client.app.state.pool  # type: ignore[attr-defined]
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT set_config('sc.communities', %s, true)", (json.dumps([w.a]),))
        assert conn.execute(_SERIES_SEEN, {"d": device}).fetchone() == (0, 0, 0, 0)
        conn.execute("SELECT set_config('sc.communities', %s, true)", (json.dumps([w.b]),))
        assert conn.execute(_SERIES_SEEN, {"d": device}).fetchone() == (1, 1, 1, 1)
    # A partition or chunk read directly would skip what guards its parent: closed.
    child = one_row(w.db, _A_CHILD_OF_READINGS)
    with pool.connection() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*child)))


_A_CHILD_OF_READINGS = """
SELECT n.nspname, c.relname FROM pg_inherits AS i
  JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE i.inhparent = 'public.readings'::regclass LIMIT 1
"""
# Every relation of the database with a device_id column that the API's role may
# read: tables, partitions, chunks, compressed chunks, materialisations, views.
_READABLE_BY_DEVICE = """
SELECT n.nspname, c.relname FROM pg_class AS c
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
  JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'device_id' AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND has_table_privilege('sc_api', c.oid, 'SELECT')
 ORDER BY 1, 2
"""


def test_no_relation_the_api_role_reads_shows_b_series_to_a(two: Two) -> None:
    """Whatever name the API's role reaches a series by (on TimescaleDB also chunks,
    compressed chunks and the continuous aggregates' materialisations), A's scope
    finds nothing of B's device there; B's scope finds its rows."""
    w = two.w
    device = w.device(w.b)
    # A day of its own, 30 days back: its chunk can be compressed and its hour
    # materialised without touching what the module's other tests write today.
    day = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    ts = day - timedelta(days=30)
    _reading_and_event(w, device, ts)
    rebuild_rollups(w.db, ts, ts + timedelta(hours=1))
    # On TimescaleDB B's rows also go into compressed chunk tables (plain PostgreSQL
    # has no compression: its partitions already hold them).
    if w.db.execute("SELECT path FROM storage_config").fetchone() == ("timescaledb",):
        w.db.execute(_COMPRESS, {"lo": ts - timedelta(days=1), "hi": ts + timedelta(days=1)})
    relations = [(str(n), str(r)) for n, r in w.db.execute(_READABLE_BY_DEVICE)]
    pool = w.client.app.state.pool  # type: ignore[attr-defined]
    seen: dict[str, dict[tuple[str, str], int]] = {}
    with pool.connection() as conn:
        for scope in (w.a, w.b):
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('sc.communities', %s, true)", (json.dumps([scope]),)
                )
                seen[scope] = {rel: _count_of(conn, rel, device) for rel in relations}
    assert {rel: n for rel, n in seen[w.a].items() if n} == {}
    # The check can fail: B's own scope reaches its rows by the contract's names.
    for name in ("readings", "device_events", "readings_1h", "readings_1d"):
        assert seen[w.b][_as_api_reads(w, name)] == 1, name


def _count_of(conn: psycopg.Connection[Any], rel: tuple[str, str], device: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE device_id = %s").format(sql.Identifier(*rel))
    return int(one_row(conn, query, (device,))[0])


def _as_api_reads(w: World, name: str) -> tuple[str, str]:
    """The relation an unqualified ``name`` means to the API's role."""
    pool = w.client.app.state.pool  # type: ignore[attr-defined]
    with pool.connection() as conn:
        row = one_row(
            conn,
            "SELECT n.nspname, c.relname FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = %s::regclass",
            (name,),
        )
    return (str(row[0]), str(row[1]))


_COMPRESS = """
SELECT compress_chunk(c, if_not_compressed => true)
  FROM (SELECT show_chunks('readings', newer_than => %(lo)s, older_than => %(hi)s)
        UNION ALL
        SELECT show_chunks('device_events', newer_than => %(lo)s, older_than => %(hi)s))
       AS chunks (c)
"""


# --- users and tokens ----------------------------------------------------------------------


def test_a_scoped_admin_cannot_take_over_a_wider_user(two: Two) -> None:
    w = two.w
    admin = two.auth("admin")
    root_id = builtin_admin_id(w.db)
    for spelled in (str(root_id), f"{root_id}.0", f"0{root_id}", f"+{root_id}"):
        made = w.client.post(f"/api/v1/users/{spelled}/tokens", headers=admin, json={"name": "x"})
        assert made.status_code in (404, 422), (spelled, made.text)
        changed = w.client.patch(f"/api/v1/users/{spelled}", headers=admin, json={"role": "viewer"})
        assert changed.status_code in (404, 422)
    wide = create_user(w.db, fresh("wide"), Role.OPERATOR, [w.a, w.b])
    assert w.client.get(f"/api/v1/users/{wide.id}", headers=admin).status_code == 404
    assert w.client.get(f"/api/v1/users/{wide.id}/tokens", headers=admin).status_code == 404
    role = w.db.execute("SELECT role FROM users WHERE id = %s", (root_id,)).fetchone()
    assert role == ("admin",)


def test_me_tokens_are_the_callers_own(two: Two) -> None:
    w = two.w
    victim = create_token(w.db, "victim", user_id=w.user_ids["admin"])
    victim_id = api_token_id(w.db, victim)
    for spelled in (str(victim_id), f"{victim_id}.0"):
        gone = w.client.delete(f"/api/v1/me/tokens/{spelled}", headers=two.auth("viewer"))
        assert gone.status_code in (404, 422)
    assert w.client.get("/api/v1/me", headers={"Authorization": f"Bearer {victim}"}).is_success
    mine = create_token(w.db, "mine", user_id=w.user_ids["viewer"])
    own = w.client.delete(
        f"/api/v1/me/tokens/{api_token_id(w.db, mine)}", headers=two.auth("viewer")
    )
    assert own.status_code == 204
    assert (
        w.client.get("/api/v1/me", headers={"Authorization": f"Bearer {mine}"}).status_code == 401
    )


# --- bodies, content types, hostile input --------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_json_body_under_another_content_type_is_415(two: Two, content_type: str | None) -> None:
    w = two.w
    body = json.dumps({"community_id": w.a, "ends_at": SOON, "reason": "x"}).encode()
    headers = two.auth("operator")
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = w.client.post("/api/v1/maintenance", headers=headers, content=body)
    assert answer.status_code == 415, answer.text


@pytest.mark.parametrize("content_type", ["Application/JSON", "APPLICATION/JSON; charset=UTF-8"])
def test_a_body_naming_b_is_checked_whatever_the_spelling_of_json(
    two: Two, content_type: str
) -> None:
    w = two.w
    body = json.dumps({"community_id": w.b, "ends_at": SOON, "reason": "spelled"}).encode()
    headers = {**two.auth("operator"), "Content-Type": content_type}
    answer = w.client.post("/api/v1/maintenance", headers=headers, content=body)
    assert answer.status_code == 422, answer.text
    # The same request for A succeeds: the spelling is JSON, the community decided.
    body = json.dumps({"community_id": w.a, "ends_at": SOON, "reason": "spelled"}).encode()
    assert w.client.post("/api/v1/maintenance", headers=headers, content=body).status_code == 201


def _event_rule() -> dict[str, Any]:
    return {
        "id": fresh("rule"),
        "type": "event",
        "title": "t",
        "severity": "warning",
        "events": ["sos_pressed"],
    }


def test_hostile_input_is_a_client_error(two: Two) -> None:
    w = two.w
    admin = two.auth("admin")
    resident = w.resident(w.a)
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/api/v1/alerts?community_id=%00", None),
        ("GET", "/api/v1/devices/d%00", None),
        ("GET", "/api/v1/alerts/1_0", None),
        ("GET", "/api/v1/alerts/4.0", None),
        ("GET", f"/api/v1/communities/{w.a}/report?month=9999-12", None),
        ("GET", f"/api/v1/communities/{w.a}/report?month=0001-01", None),
        ("GET", "/api/v1/users/78594884999228830062651375616/tokens", None),
        ("POST", "/api/v1/communities", {"id": "nl\n", "name": "x"}),
        ("POST", "/api/v1/residents", {"id": fresh("r"), "community_id": w.a, "name": "a\x00"}),
        ("POST", "/api/v1/rules", {**World.rule_body(w.a, fresh("rule")), "scope": "x"}),
        ("POST", "/api/v1/rules", {**_event_rule(), "where": "x"}),
        ("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/", "community_id": w.device(w.a)}),
    ]
    for method, path, body in requests:
        answer = w.client.request(method, path, headers=admin, json=body)
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code, answer.text)
    # A lone surrogate: valid JSON, not encodable for the database.
    surrogate = b'{"id": "d-sur", "community_id": "%s", "device_class": "fire", "name": "\\ud800"}'
    answer = w.client.post(
        "/api/v1/devices",
        headers={**admin, "Content-Type": "application/json"},
        content=surrogate % w.a.encode(),
    )
    assert answer.status_code == 422, answer.text
    # Even for the administrator of every community, a community must exist.
    hook = {"url": "http://127.0.0.1:9/", "community_id": w.device(w.a)}
    assert w.client.post("/api/v1/webhooks", headers=two.auth("root"), json=hook).status_code == 422
    nulled = w.client.patch(f"/api/v1/residents/{resident}", headers=admin, json={"contacts": None})
    assert nulled.status_code == 200, nulled.text
    assert nulled.json()["contacts"] == []
    unnamed = w.client.patch(f"/api/v1/residents/{resident}", headers=admin, json={"name": None})
    assert unnamed.status_code == 422, unnamed.text


def test_refused_cross_scope_attempts_are_audited(two: Two) -> None:
    w = two.w
    alert = w.alert(w.b)
    assert w.client.get(f"/api/v1/alerts/{alert}", headers=two.auth("viewer")).status_code == 404
    row = one_row(
        w.db,
        "SELECT actor, community_id, after FROM audit_log"
        " WHERE action = 'refused' AND entity = 'alert' AND entity_id = %s",
        (alert,),
    )
    actor, community, after = row
    assert actor.startswith("user:viewer")
    assert community == w.b
    assert after == {"method": "GET", "route": "/api/v1/alerts/{alert_id}"}
    # B's side may read it; A's administrator may not.
    seen_by_a = w.client.get("/api/v1/audit", headers=two.auth("admin"), params={"limit": 1000})
    assert alert not in {e["entity_id"] for e in seen_by_a.json()["data"] if e["entity"] == "alert"}


# --- webhooks and metrics ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_webhooks_to_private_destinations_are_refused(module_database_url: str, url: str) -> None:
    database_url = module_database_url
    settings = Settings(
        database_url=database_url, alerts=AlertSettings(webhook_private_destinations=False)
    )
    with (
        TestClient(create_app(settings)) as client,
        psycopg.connect(database_url, autocommit=True) as db,
    ):
        token = create_token(db, "hooks")
        answer = client.post(
            "/api/v1/webhooks", headers={"Authorization": f"Bearer {token}"}, json={"url": url}
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["type"] == "private_destination"


def test_global_webhooks_are_for_administrators_of_every_community(two: Two) -> None:
    w = two.w
    row = one_row(
        w.db,
        "INSERT INTO webhooks (url, secret) VALUES ('https://hooks.example/t0ken', 's')"
        " RETURNING id",
    )
    hook = int(row[0])
    listed = w.client.get("/api/v1/webhooks", headers=two.auth("admin")).json()
    assert hook not in {h["id"] for h in listed}
    assert w.client.delete(f"/api/v1/webhooks/{hook}", headers=two.auth("admin")).status_code == 404
    everything = w.client.get("/api/v1/webhooks", headers=two.auth("root")).json()
    assert hook in {h["id"] for h in everything}


def test_metrics_show_community_figures_only_to_global_viewers(two: Two) -> None:
    w = two.w
    w.device(w.a)
    assert w.client.get("/metrics", headers=two.auth("viewer")).status_code == 403
    scoped = w.client.get("/metrics", headers=two.auth("operator"))
    assert scoped.status_code == 200
    assert "sc_devices{" not in scoped.text
    root = w.client.get("/metrics", headers=two.auth("root"))
    assert "sc_devices{" in root.text


# --- the live stream -----------------------------------------------------------------------


@pytest.fixture
def live(fresh_database_url: str) -> Iterator[tuple[str, str]]:
    """The API in a real server (streams need a real event loop and socket)."""
    setup_devices(fresh_database_url, "c1", [("w1", "wearable", None), ("w2", "wearable", None)])
    settings = Settings(database_url=fresh_database_url, api=ApiSettings(max_streams_per_user=2))
    with running_api(settings) as api:
        yield api.url, fresh_database_url


class Reader(threading.Thread):
    """Reads one stream, recording events and when it ended."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.events: list[str] = []
        self.opened = threading.Event()
        self.first = threading.Event()
        self.status = 0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with (
            httpx.Client(timeout=60) as client,
            client.stream("GET", f"{self.base}/api/v1/alerts/stream", headers=headers) as r,
        ):
            self.status = r.status_code
            self.opened.set()
            for line in r.iter_lines():
                if line.startswith("event: "):
                    self.events.append(line[7:])
                    self.first.set()


def test_revoking_the_token_ends_the_stream_and_nothing_follows(live: tuple[str, str]) -> None:
    base, url = live
    with psycopg.connect(url, autocommit=True) as db:
        token = create_token(db, "stream")
        other = create_token(db, "another user's")  # the built-in admin, too: same user
        reader = Reader(base, token)
        reader.start()
        assert reader.opened.wait(20)
        assert reader.status == 200
        raise_alert(url, "w1", T0.timestamp())
        assert reader.first.wait(20), "the stream delivered nothing"
        # One LISTEN for the process however many streams are open.
        second = Reader(base, other)
        second.start()
        assert second.opened.wait(20)
        listeners = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query ILIKE 'LISTEN%%'"
        ).fetchone()
        assert listeners == (1,)
        # The cap: two streams per user here; the third is refused.
        third = httpx.get(
            f"{base}/api/v1/alerts/stream", headers={"Authorization": f"Bearer {token}"}
        )
        assert third.status_code == 429
        db.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = %s", (hash_token(token),)
        )
        raise_alert(url, "w2", T0.timestamp() + 1)
        reader.join(5)
        assert not reader.is_alive(), "the stream outlived its token by more than 5 s"
        assert reader.events == ["raised"], reader.events
        # The other stream lives on with its own token; it ends when that is revoked.
        assert second.is_alive()
        db.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = %s", (hash_token(other),)
        )
        second.join(5)
        assert not second.is_alive()
