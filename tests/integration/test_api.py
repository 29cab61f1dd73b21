"""The HTTP API against a real PostgreSQL: auth, registry, time series, dead letters, metrics."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.types.json import Jsonb

from api.app import create_app
from core.observability import PipelineCounters
from core.settings import ApiSettings, Settings
from store.accounts import create_token, list_tokens, revoke_token
from tests.exposition import parse_exposition
from tests.integration.support import api_token_id

pytestmark = pytest.mark.integration

# Small, so that capping is visible without creating a thousand devices.
MAX_PAGE = 5
BASE = datetime(2026, 1, 1, tzinfo=UTC)
PUBLIC_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(value: datetime) -> str:
    return value.isoformat()


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, api=ApiSettings(max_page_size=MAX_PAGE))


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def db(client: TestClient, database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection for arranging rows directly; the client fixture has migrated the schema."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def token(db: psycopg.Connection[Any]) -> str:
    return create_token(db, "integration tests")


@pytest.fixture(scope="module")
def auth(token: str) -> dict[str, str]:
    return bearer(token)


@pytest.fixture
def community(client: TestClient, auth: dict[str, str]) -> str:
    community_id = unique("c")
    response = client.post(
        "/api/v1/communities", json={"id": community_id, "name": "Test"}, headers=auth
    )
    assert response.status_code == 201, response.text
    return community_id


def register(
    client: TestClient, auth: dict[str, str], community_id: str, device_id: str, **extra: Any
) -> dict[str, Any]:
    body = {"id": device_id, "community_id": community_id, "device_class": "wearable", **extra}
    response = client.post("/api/v1/devices", json=body, headers=auth)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


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


# --- readings and events ------------------------------------------------------------------


def test_readings_pagination(
    client: TestClient, auth: dict[str, str], community: str, db: psycopg.Connection[Any]
) -> None:
    device_id = unique("w")
    register(client, auth, community, device_id)
    rows: list[tuple[str, str, datetime, float, int | None, datetime]] = [
        (device_id, metric, BASE + timedelta(minutes=i), value + i, i, BASE + timedelta(hours=1))
        for i in range(4)
        for metric, value in (("spo2", 95.5), ("heart_rate", 70.0))
    ]
    rows.append((device_id, "spo2", BASE + timedelta(hours=2), 1.0, None, BASE))  # out of range
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (device_id, metric, ts, value, seq, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )
    url = f"/api/v1/devices/{device_id}/readings"
    window = {"start": iso(BASE), "end": iso(BASE + timedelta(hours=1))}
    got: list[tuple[str, datetime, float, int | None]] = []
    pages = 0
    after: str | None = None
    while True:
        query: dict[str, str | int] = {**window, "limit": 3}
        if after is not None:
            query["after"] = after
        response = client.get(url, params=query, headers=auth)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        for r in page["data"]:
            assert datetime.fromisoformat(r["received_at"]) == BASE + timedelta(hours=1)
            got.append((r["metric"], datetime.fromisoformat(r["ts"]), r["value"], r["seq"]))
        after = page["next_cursor"]
        if after is None:
            break
    expected = sorted(
        ((m, ts, v, s) for _, m, ts, v, s, _ in rows[:-1]), key=lambda r: (r[1], r[0])
    )
    assert got == expected
    assert pages == 3

    spo2 = client.get(url, params={**window, "metric": "spo2"}, headers=auth).json()
    assert [r["value"] for r in spo2["data"]] == [95.5, 96.5, 97.5, 98.5]
    assert spo2["next_cursor"] is None


def test_readings_default_to_the_last_hour(
    client: TestClient, auth: dict[str, str], community: str, db: psycopg.Connection[Any]
) -> None:
    device_id = unique("w")
    register(client, auth, community, device_id)
    db.execute(
        "INSERT INTO readings (device_id, metric, ts, value, received_at) VALUES"
        " (%(d)s, 'battery', now() - interval '10 minutes', 80, now()),"
        " (%(d)s, 'battery', now() - interval '2 hours', 90, now())",
        {"d": device_id},
    )
    page = client.get(f"/api/v1/devices/{device_id}/readings", headers=auth).json()
    assert [r["value"] for r in page["data"]] == [80.0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2026-01-01T00:00:00"}, "Input should have timezone info"),
        ({"start": iso(BASE), "end": iso(BASE - timedelta(seconds=1))}, "end must be after start"),
        ({"start": iso(BASE), "end": iso(BASE)}, "end must be after start"),
        (
            {"start": iso(BASE), "end": iso(BASE + timedelta(days=31, seconds=1))},
            "the range may span at most 31 days",
        ),
        ({"start": iso(BASE), "after": "bm90IGEgY3Vyc29y"}, "invalid cursor"),
        ({"start": iso(BASE), "after": "%%%"}, "invalid cursor"),
    ],
)
@pytest.mark.parametrize("series", ["readings", "events"])
def test_time_range_validation(
    client: TestClient,
    auth: dict[str, str],
    community: str,
    params: dict[str, str],
    message: str,
    series: str,
) -> None:
    device_id = unique("w")
    register(client, auth, community, device_id)
    response = client.get(f"/api/v1/devices/{device_id}/{series}", params=params, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"].startswith(message)


@pytest.mark.parametrize("series", ["readings", "events"])
def test_time_series_of_unknown_device(
    client: TestClient, auth: dict[str, str], series: str
) -> None:
    response = client.get(f"/api/v1/devices/ghost-1/{series}", headers=auth)
    assert response.status_code == 404
    assert response.json() == {"detail": "no device 'ghost-1'"}


def test_events_pagination(
    client: TestClient, auth: dict[str, str], community: str, db: psycopg.Connection[Any]
) -> None:
    device_id = unique("w")
    register(client, auth, community, device_id)
    events = [
        (BASE, "sos_pressed", {}),
        (BASE, "fall_detected", {"confidence": 0.93}),
        (BASE + timedelta(seconds=1), "fall_detected", {"confidence": 0.5}),
    ]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO device_events (device_id, ts, event, data, seq, received_at)"
            " VALUES (%s, %s, %s, %s, %s, now())",
            [(device_id, ts, event, Jsonb(data), n) for n, (ts, event, data) in enumerate(events)],
        )
    url = f"/api/v1/devices/{device_id}/events"
    window = {"start": iso(BASE), "end": iso(BASE + timedelta(minutes=1))}
    first = client.get(url, params={**window, "limit": 2}, headers=auth).json()
    second = client.get(
        url, params={**window, "limit": 2, "after": first["next_cursor"]}, headers=auth
    ).json()
    got = [(e["event"], e["data"], e["seq"]) for e in first["data"] + second["data"]]
    assert got == [
        ("fall_detected", {"confidence": 0.93}, 1),
        ("sos_pressed", {}, 0),
        ("fall_detected", {"confidence": 0.5}, 2),
    ]
    assert second["next_cursor"] is None
    only = client.get(url, params={**window, "event": "sos_pressed"}, headers=auth).json()
    assert [e["seq"] for e in only["data"]] == [0]


# --- dead letters and metrics -------------------------------------------------------------


def _dead_letter(
    db: psycopg.Connection[Any], reason: str, payload: bytes, received_at: datetime
) -> int:
    row = db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, detail, worker)"
        " VALUES (%s, 'community/c1/fire/f1/telemetry', %s, %s, 'because', 'w1') RETURNING id",
        (received_at, payload, reason),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_dead_letters(
    client: TestClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    reason = unique("bad_json")
    binary = b"\xff\xfe\x00garbage"
    oldest = _dead_letter(db, reason, b'{"ts": 1', BASE)
    middle = _dead_letter(db, reason, binary, BASE + timedelta(seconds=1))
    newest = _dead_letter(db, reason, '{"név": "ü"}'.encode(), BASE + timedelta(seconds=2))
    _dead_letter(db, unique("other"), b"x", BASE + timedelta(seconds=3))

    first = client.get("/api/v1/dead-letters", params={"reason": reason, "limit": 2}, headers=auth)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [d["id"] for d in page["data"]] == [newest, middle]
    assert page["data"][0]["payload"] == '{"név": "ü"}'
    assert page["data"][0]["payload_encoding"] == "utf-8"
    assert page["data"][1] == {
        "id": middle,
        "received_at": page["data"][1]["received_at"],
        "topic": "community/c1/fire/f1/telemetry",
        "reason": reason,
        "detail": "because",
        "worker": "w1",
        "payload": base64.b64encode(binary).decode(),
        "payload_encoding": "base64",
        "payload_size": len(binary),
        "truncated": False,
        "replayed_at": None,
        "replay_outcome": None,
        "replay_reason": None,
    }
    assert datetime.fromisoformat(page["data"][1]["received_at"]) == BASE + timedelta(seconds=1)
    rest = client.get(
        "/api/v1/dead-letters",
        params={"reason": reason, "limit": 2, "after": page["next_cursor"]},
        headers=auth,
    ).json()
    assert [d["id"] for d in rest["data"]] == [oldest]
    assert rest["next_cursor"] is None


def test_dead_letters_by_device_and_time(
    client: TestClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    reason = unique("too_deep")
    device = unique("dev")
    rows = [
        (BASE + timedelta(minutes=n), f"community/c1/wearable/{d}/telemetry")
        for n, d in enumerate([device, "other", device, device])
    ]
    ids = [
        int(
            db.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, payload_size, reason,"
                " detail) VALUES (%s, %s, 'abc', %s, %s, '') RETURNING id",
                (at, topic, 70_000 if n == 3 else None, reason),
            ).fetchone()[0]  # type: ignore[index]
        )
        for n, (at, topic) in enumerate(rows)
    ]
    params = {
        "reason": reason,
        "device": device,
        "since": (BASE + timedelta(minutes=1)).isoformat(),
        "until": (BASE + timedelta(minutes=4)).isoformat(),
    }
    page = client.get("/api/v1/dead-letters", params=params, headers=auth).json()
    assert [d["id"] for d in page["data"]] == [ids[3], ids[2]]
    assert page["data"][0]["truncated"] is True
    assert page["data"][0]["payload_size"] == 70_000
    assert page["data"][1]["truncated"] is False
    assert page["data"][1]["payload_size"] == 3


def test_metrics(client: TestClient, auth: dict[str, str], db: psycopg.Connection[Any]) -> None:
    worker = unique("worker")
    counters = PipelineCounters()
    counters.add("messages_received_total", 42)
    counters.reject("bad_json", 3)
    counters.committed(messages=7, seconds=0.02)
    saved = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    db.execute(
        "INSERT INTO pipeline_metrics (worker, updated_at, counters) VALUES (%s, %s, %s)",
        (worker, saved, Jsonb(counters.snapshot())),
    )
    reason = unique("bad_json")
    for n in range(2):
        _dead_letter(db, reason, b"{", BASE + timedelta(seconds=n))

    response = client.get("/metrics", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    types, samples = parse_exposition(response.text)
    w = (("worker", worker),)
    assert types["sc_pipeline_messages_received"] == "counter"
    assert samples[("sc_pipeline_messages_received_total", w)] == 42
    assert samples[("sc_pipeline_messages_rejected_total", (("reason", "bad_json"), *w))] == 3
    assert samples[("sc_pipeline_batch_size_bucket", (("le", "10"), *w))] == 1
    assert samples[("sc_pipeline_commit_seconds_count", w)] == 1
    assert samples[("sc_pipeline_snapshot_timestamp_seconds", w)] == saved.timestamp()
    assert samples[("sc_dead_letters", (("reason", reason),))] == 2
    assert types["sc_devices"] == "gauge"


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
