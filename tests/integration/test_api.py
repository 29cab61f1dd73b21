"""The HTTP API against a real PostgreSQL: health, auth and tokens, communities and devices,
and a database that is fresh or goes away."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from api.app import create_app
from core.settings import Settings
from store.accounts import create_token, list_tokens, revoke_token
from tests.integration.api_support import (
    MAX_PAGE,
    PUBLIC_PATHS,
    auth_fixture,  # noqa: F401 - the auth fixture
    bearer,
    client_fixture,  # noqa: F401 - the client fixture
    community_fixture,  # noqa: F401 - the community fixture
    db_fixture,  # noqa: F401 - the db fixture
    register,
    settings_fixture,  # noqa: F401 - the settings fixture
    token_fixture,  # noqa: F401 - the token fixture
    unique,
)
from tests.integration.support import api_token_id

pytestmark = pytest.mark.integration


# --- health and auth ----------------------------------------------------------------------


def test_health_needs_no_token(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    # Other tests' pipelines may be running on this database (or none).
    assert response.json()["status"] == "ok"
    assert response.json()["database"] == "ok"


def _protected_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every operation the OpenAPI document lists, except /health."""
    found: list[tuple[str, str]] = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if path in PUBLIC_PATHS:
            continue
        concrete = path.replace("{device_id}", "d-x").replace("{community_id}", "c-x")
        found.extend((method.upper(), concrete) for method in sorted(operations))
    return found


def test_every_route_but_health_is_protected(client: TestClient) -> None:
    routes = _protected_routes(client)
    # The list is built from the app itself; make sure it saw what we expect.
    assert ("GET", "/metrics") in routes
    assert ("POST", "/api/v1/devices") in routes
    assert ("GET", "/api/v1/devices/d-x/readings") in routes
    assert ("GET", "/api/v1/dead-letters") in routes
    assert ("GET", "/api/v1/communities/c-x/latest") in routes
    # + alerts, stream, maintenance, rules, webhooks; + buildings, device lifecycle and
    # import, residents, users, tokens, me, audit, fleet status; + the dashboard's tiles,
    # figures and a device's latest values; + visits and the monthly report; + responders,
    # teams, duty, incidents and dispatches; + incident targets
    assert len(routes) == 14 + 20 + 28 + 3 + 7 + 22 + 2


@pytest.mark.parametrize("kind", ["missing", "wrong", "revoked", "expired", "basic"])
def test_bad_credentials_are_refused(
    client: TestClient, db: psycopg.Connection[Any], kind: str
) -> None:
    headers: dict[str, str]
    if kind == "missing":
        headers = {}
    elif kind == "wrong":
        headers = bearer("sc_" + "A" * 43)
    elif kind == "basic":
        headers = {"Authorization": "Basic dXNlcjpwYXNz"}
    else:
        secret = create_token(db, f"to be {kind}")
        token_id = api_token_id(db, secret)
        if kind == "revoked":
            assert revoke_token(db, token_id) is True
        else:
            db.execute(
                "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s",
                (token_id,),
            )
        headers = bearer(secret)
    for method, path in _protected_routes(client):
        response = client.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
    expected = {
        "missing": "missing bearer token",
        "basic": "missing bearer token",
        "wrong": "unknown bearer token",
        "revoked": "bearer token revoked",
        "expired": "bearer token expired",
    }[kind]
    assert client.get("/api/v1/devices", headers=headers).json() == {"detail": expected}


def test_token_storage_and_last_use(client: TestClient, db: psycopg.Connection[Any]) -> None:
    secret = create_token(db, "last-use", datetime.now(UTC) + timedelta(days=1))
    assert secret.startswith("sc_")
    assert len(secret) == 3 + 43  # 32 bytes of base64url
    token_id = api_token_id(db, secret)
    stored, last_used = db.execute(
        "SELECT token_hash, last_used_at FROM api_tokens WHERE id = %s", (token_id,)
    ).fetchone() or (None, None)
    assert stored == hashlib.sha256(secret.encode()).digest()
    assert last_used is None

    assert client.get("/api/v1/communities", headers=bearer(secret)).status_code == 200
    (first,) = db.execute(
        "SELECT last_used_at FROM api_tokens WHERE id = %s", (token_id,)
    ).fetchone() or (None,)
    assert first is not None
    assert client.get("/api/v1/communities", headers=bearer(secret)).status_code == 200
    (second,) = db.execute(
        "SELECT last_used_at FROM api_tokens WHERE id = %s", (token_id,)
    ).fetchone() or (None,)
    assert second == first  # written at most once a minute

    listed = {t.id: t for t in list_tokens(db)}
    assert listed[token_id].name == "last-use"
    assert listed[token_id].revoked_at is None
    assert revoke_token(db, token_id) is True
    assert revoke_token(db, token_id) is False
    assert client.get("/api/v1/communities", headers=bearer(secret)).status_code == 401


def test_create_token_refuses_bad_expiry(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        create_token(db, "naive", datetime(2030, 1, 1))  # noqa: DTZ001 the point of the test
    with pytest.raises(ValueError, match="in the past"):
        create_token(db, "past", datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="needs a name"):
        create_token(db, " ")


# --- communities and devices --------------------------------------------------------------


def test_register_community(client: TestClient, auth: dict[str, str]) -> None:
    community_id = unique("c")
    body = {"id": community_id, "name": "Riverside", "kind": "rural", "time_zone": "Asia/Urumqi"}
    response = client.post("/api/v1/communities", json=body, headers=auth)
    assert response.status_code == 201, response.text
    created = response.json()
    assert {k: created[k] for k in body} == body
    assert client.get(f"/api/v1/communities/{community_id}", headers=auth).json() == created

    again = client.post("/api/v1/communities", json=body, headers=auth)
    assert again.status_code == 409
    assert again.json() == {"detail": f"community {community_id!r} already exists"}

    bad_zone = client.post(
        "/api/v1/communities",
        json={**body, "id": unique("c"), "time_zone": "Mars/Olympus"},
        headers=auth,
    )
    assert bad_zone.status_code == 422
    assert "unknown time zone 'Mars/Olympus'" in bad_zone.json()["detail"][0]["msg"]
    bad_kind = client.post(
        "/api/v1/communities", json={**body, "id": unique("c"), "kind": "suburb"}, headers=auth
    )
    assert bad_kind.status_code == 422
    assert client.get("/api/v1/communities/nope-x", headers=auth).status_code == 404


def test_register_device(client: TestClient, auth: dict[str, str], community: str) -> None:
    device_id = unique("w")
    created = register(
        client, auth, community, device_id, model="W1", name="Mrs Li", expected_interval_s=60
    )
    credentials = created.pop("credentials")  # shown once, at registration
    assert credentials["username"] == device_id
    assert len(credentials["password"]) >= 32
    expected = {
        "id": device_id,
        "community_id": community,
        "device_class": "wearable",
        "model": "W1",
        "name": "Mrs Li",
        "state": "active",
        "expected_interval_s": 60,
        "created_at": created["created_at"],
        "last_seen": None,
        "last_received_at": None,
        "online": None,
        "status_at": None,
        "reporting": False,
    }
    assert {k: created[k] for k in expected} == expected
    assert client.get(f"/api/v1/devices/{device_id}", headers=auth).json() == created

    body = {"id": device_id, "community_id": community, "device_class": "wearable"}
    duplicate = client.post("/api/v1/devices", json=body, headers=auth)
    assert duplicate.status_code == 409
    assert duplicate.json() == {"detail": f"device {device_id!r} already exists"}

    bad_class = client.post(
        "/api/v1/devices", json={**body, "id": unique("w"), "device_class": "toaster"}, headers=auth
    )
    assert bad_class.status_code == 422
    assert bad_class.json()["detail"][0]["msg"] == (
        "Value error, unknown device class 'toaster':"
        " expected one of access, fire, locker, wearable"
    )

    orphan = client.post(
        "/api/v1/devices", json={**body, "id": unique("w"), "community_id": "nowhere"}, headers=auth
    )
    assert orphan.status_code == 422
    assert orphan.json() == {
        "detail": [
            {
                "loc": ["body", "community_id"],
                "msg": "unknown community 'nowhere': create it first with POST /api/v1/communities",
                "type": "unknown_community",
            }
        ]
    }

    bad_id = client.post("/api/v1/devices", json={**body, "id": "a/b#"}, headers=auth)
    assert bad_id.status_code == 422
    missing = client.get("/api/v1/devices/no-such-device", headers=auth)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no device 'no-such-device'"}


def test_device_reporting_and_status(
    client: TestClient, auth: dict[str, str], community: str, db: psycopg.Connection[Any]
) -> None:
    device_id = unique("w")
    register(client, auth, community, device_id, expected_interval_s=60)
    seen = datetime.now(UTC) - timedelta(seconds=30)
    db.execute(
        "UPDATE devices SET last_seen = %s, last_received_at = %s, online = true,"
        " status_at = %s WHERE id = %s",
        (seen, seen, seen, device_id),
    )
    shown = client.get(f"/api/v1/devices/{device_id}", headers=auth).json()
    assert datetime.fromisoformat(shown["last_seen"]) == seen
    assert shown["online"] is True
    assert shown["reporting"] is True


def test_list_devices_pages_are_stable(
    client: TestClient, auth: dict[str, str], community: str, db: psycopg.Connection[Any]
) -> None:
    ids = [f"{community}-d{n}" for n in (7, 3, 9, 1, 5, 2, 8)]
    for device_id in ids:
        register(client, auth, community, device_id)
    register(client, auth, community, f"{community}-f1", device_class="fire")
    db.execute("UPDATE devices SET state = 'maintenance' WHERE id = %s", (f"{community}-d5",))

    params: dict[str, str | int] = {
        "community_id": community,
        "device_class": "wearable",
        "limit": 3,
    }
    seen: list[str] = []
    cursors: list[str | None] = []
    page = client.get("/api/v1/devices", params=params, headers=auth).json()
    # A device added before the cursor while paging must not shift later pages.
    register(client, auth, community, f"{community}-d0")
    while True:
        seen += [d["id"] for d in page["data"]]
        cursors.append(page["next_cursor"])
        if page["next_cursor"] is None:
            break
        page = client.get(
            "/api/v1/devices", params={**params, "after": page["next_cursor"]}, headers=auth
        ).json()
    assert seen == sorted(ids)
    assert cursors == [f"{community}-d3", f"{community}-d8", None]

    maintenance = client.get(
        "/api/v1/devices", params={"community_id": community, "state": "maintenance"}, headers=auth
    ).json()
    assert [d["id"] for d in maintenance["data"]] == [f"{community}-d5"]
    fire = client.get(
        "/api/v1/devices", params={"community_id": community, "device_class": "fire"}, headers=auth
    ).json()
    assert fire == {"data": [fire["data"][0]], "next_cursor": None}
    assert fire["data"][0]["id"] == f"{community}-f1"

    capped = client.get(
        "/api/v1/devices", params={"community_id": community, "limit": 1000}, headers=auth
    ).json()
    assert len(capped["data"]) == MAX_PAGE
    assert capped["next_cursor"] == capped["data"][-1]["id"]

    for bad in ({"device_class": "toaster"}, {"state": "lost"}, {"limit": 0}):
        assert client.get("/api/v1/devices", params=bad, headers=auth).status_code == 422


# --- a fresh database, and one that goes away ---------------------------------------------


def test_fresh_database_and_outage(fresh_database_url: str, database_server_url: str) -> None:
    settings = Settings(database_url=fresh_database_url)
    with (
        TestClient(create_app(settings)) as client,
        # A database cannot close its doors from inside: administer it from the server's.
        psycopg.connect(database_server_url, autocommit=True) as admin,
    ):
        # Start-up migrated the empty database.
        with psycopg.connect(fresh_database_url) as conn:
            secret = create_token(conn, "outage")
            name = conn.info.dbname
        assert client.get("/health").json() == {
            "status": "ok",
            "database": "ok",
            "pipeline": "none",
            "detail": None,
        }
        assert client.get("/api/v1/devices", headers=bearer(secret)).json() == {
            "data": [],
            "next_cursor": None,
        }

        database = sql.Identifier(name)
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(database))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            down = client.get("/health")
            assert down.status_code == 503
            assert down.json() == {
                "status": "unavailable",
                "database": "unreachable",
                "pipeline": "unknown",
                "detail": None,
            }
            refused = client.get("/api/v1/devices", headers=bearer(secret))
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(database))

        # The pool reconnects on its own (with backoff) once the database is back.
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "API did not recover after the outage"
            time.sleep(0.2)
