"""The registry through the API: CSV imports good, bad and mixed; the device lifecycle;
residents; connectivity on a controllable clock; the audit log; tokens; limits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.access import Role
from core.device_csv import MAX_CSV_ROWS
from core.passwords import verify_password
from core.settings import ApiSettings, Settings
from store.accounts import create_token, create_user
from tests.integration.support import one_row

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Clock:
    """The API's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Api:
    client: TestClient
    db: psycopg.Connection[Any]
    clock: Clock
    community: str
    tokens: dict[str, str]

    def call(self, method: str, path: str, role: str = "installer", **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}", **kwargs.pop("headers", {})}
        return self.client.request(method, "/api/v1" + path, headers=headers, **kwargs)

    def import_csv(self, text: str, **params: Any) -> Any:
        return self.call(
            "POST",
            "/devices/import",
            content=text.encode(),
            headers={"Content-Type": "text/csv"},
            params=params,
        )


@pytest.fixture(scope="module")
def api(database_url: str) -> Iterator[Api]:
    clock = Clock()
    app = create_app(Settings(database_url=database_url, api=ApiSettings(max_page_size=50)))
    app.state.clock = clock
    with TestClient(app) as client, psycopg.connect(database_url, autocommit=True) as db:
        community = unique("c")
        db.execute("INSERT INTO communities (id, name) VALUES (%s, 'Riverside')", (community,))
        tokens = {}
        for role in Role:
            user = create_user(db, unique(role.value), role, [community])
            tokens[role.value] = create_token(db, "registry tests", user_id=user.id)
        yield Api(client, db, clock, community, tokens)


def _device(api: Api, device_id: str) -> dict[str, Any]:
    response = api.call("GET", f"/devices/{device_id}", role="viewer")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- CSV import -------------------------------------------------------------------------

HEADER = "id,community_id,device_class,model,name,expected_interval_s,building,floor,unit\n"


def test_import_a_good_file(api: Api) -> None:
    c = api.community
    ids = [unique("w"), unique("f"), unique("l")]
    text = HEADER + (
        f"{ids[0]},{c},wearable,W1,Watch 1,60,B1,3,B1-0301\n"
        f"{ids[1]},{c},fire,S1,Smoke 1,300,B1,,\n"
        f"{ids[2]},{c},locker,L1,Lockers,600,,,\n"
    )
    response = api.import_csv(text)
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["imported"] == 3
    assert report["invalid"] == 0
    assert report["errors"] == []
    passwords = {c["device_id"]: c["password"] for c in report["credentials"]}
    assert sorted(passwords) == sorted(ids)
    watch = _device(api, ids[0])
    assert (watch["building"], watch["unit"], watch["floor"]) == ("B1", "B1-0301", 3)
    assert watch["has_credentials"] is True
    assert watch["installed_by"].startswith("user:installer-")
    stored = one_row(api.db, "SELECT mqtt_password_hash FROM devices WHERE id = %s", (ids[0],))
    assert verify_password(passwords[ids[0]], stored[0])
    assert passwords[ids[0]] not in stored[0]
    # Importing the same file again: every row is now a duplicate; nothing changes.
    again = api.import_csv(text)
    assert again.status_code == 422
    assert [e["line"] for e in again.json()["errors"]] == [2, 3, 4]
    assert again.json()["errors"][0]["reason"] == f"device {ids[0]!r} already exists"


def _mixed(api: Api) -> tuple[str, list[str]]:
    c = api.community
    good = [unique("ok"), unique("ok")]
    text = (
        "id,community_id,device_class,expected_interval_s\n"
        f"{good[0]},{c},fire,60\n"  # 2
        f"{unique('x')},{c},toaster,60\n"  # 3
        f"{unique('x')},nowhere-{uuid.uuid4().hex[:6]},fire,60\n"  # 4
        f"{good[1]},{c},access,60\n"  # 5
        f"{unique('x')},{c},fire,-5\n"  # 6
    )
    return text, good


def test_a_bad_row_means_nothing_is_imported(api: Api) -> None:
    text, good = _mixed(api)
    response = api.import_csv(text)
    assert response.status_code == 422
    report = response.json()
    assert report["imported"] == 0
    assert report["credentials"] == []
    assert [(e["line"], e["reason"].split(":")[0]) for e in report["errors"]] == [
        (3, "device_class"),
        (4, report["errors"][1]["reason"].split(":")[0]),
        (6, "expected_interval_s"),
    ]
    assert report["errors"][1]["reason"].startswith("unknown community 'nowhere-")
    for device_id in good:
        assert api.call("GET", f"/devices/{device_id}").status_code == 404


def test_skip_invalid_imports_the_good_rows(api: Api) -> None:
    text, good = _mixed(api)
    dry = api.import_csv(text, skip_invalid=True, dry_run=True)
    assert dry.status_code == 200
    assert (dry.json()["imported"], dry.json()["invalid"]) == (2, 3)
    assert api.call("GET", f"/devices/{good[0]}").status_code == 404
    response = api.import_csv(text, skip_invalid=True)
    assert response.status_code == 201
    report = response.json()
    assert (report["imported"], report["invalid"]) == (2, 3)
    assert sorted(c["device_id"] for c in report["credentials"]) == sorted(good)
    assert [e["line"] for e in report["errors"]] == [3, 4, 6]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("id,community_id,colour\n", 1, "unknown column 'colour'"),
        ("\n", 1, "empty file"),
        (
            "id,community_id,device_class\n" + "d,c,fire\n" * (MAX_CSV_ROWS + 1),
            MAX_CSV_ROWS + 2,
            "more than 10,000 devices",
        ),
    ],
)
def test_a_file_that_is_not_a_device_list(api: Api, text: str, line: int, reason: str) -> None:
    response = api.import_csv(text)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["line"] == line
    assert error["reason"].startswith(reason)


def test_import_limits(api: Api) -> None:
    not_utf8 = api.call(
        "POST",
        "/devices/import",
        content=b"id,community_id,device_class\n\xff,c,fire\n",
        headers={"Content-Type": "text/csv"},
    )
    assert not_utf8.status_code == 422
    assert not_utf8.json()["errors"][0]["reason"].startswith("not UTF-8")
    huge = api.call(
        "POST",
        "/devices/import",
        content=b"x" * (4 * 1024 * 1024 + 10),
        headers={"Content-Type": "text/csv"},
    )
    assert huge.status_code == 413
    json_body = api.call("POST", "/devices", json={"id": "x" * (2 * 1024 * 1024)})
    assert json_body.status_code == 413
    assert api.call("GET", "/devices", params={"limit": 0}).status_code == 422
    capped = api.call("GET", "/devices", params={"limit": 10_000}).json()
    assert len(capped["data"]) <= 50


# --- one device through its life -------------------------------------------------------------


def test_device_lifecycle_and_its_audit(api: Api) -> None:
    device_id = unique("w")
    body = {"id": device_id, "community_id": api.community, "device_class": "wearable"}
    created = api.call("POST", "/devices", json={**body, "building": "nope"})
    assert created.status_code == 422
    assert created.json()["detail"][0] == {
        "loc": ["body", "building"],
        "msg": "unknown building 'nope'",
        "type": "unknown_building",
    }
    created = api.call("POST", "/devices", json=body)
    assert created.status_code == 201
    registered = created.json()
    assert registered["credentials"]["publish"] == (
        f"community/{api.community}/wearable/{device_id}/#"
    )
    assert registered["credentials"]["subscribe"] == (
        f"community/{api.community}/wearable/{device_id}/cmd"
    )
    assert registered["connectivity"] == "never_seen"

    building = api.call(
        "POST", f"/communities/{api.community}/buildings", json={"id": unique("b"), "floors": 6}
    ).json()["id"]
    api.call(
        "POST",
        f"/communities/{api.community}/buildings/{building}/units",
        json={"id": "0201", "floor": 2},
    )
    moved = api.call(
        "PATCH", f"/devices/{device_id}", json={"building": building, "unit": "0201", "name": "Li"}
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["building"], moved.json()["floor"]) == (building, 2)
    refused = api.call("PATCH", f"/devices/{device_id}", json={"community_id": "elsewhere"})
    assert refused.status_code == 422  # community and class are fixed

    assert api.call("POST", f"/devices/{device_id}/maintenance").json()["state"] == "maintenance"
    assert api.call("POST", f"/devices/{device_id}/activate").json()["state"] == "active"
    rotated = api.call("POST", f"/devices/{device_id}/credentials").json()
    assert rotated["credentials"]["password"] != registered["credentials"]["password"]
    retired = api.call("POST", f"/devices/{device_id}/decommission").json()
    assert retired["state"] == "decommissioned"
    assert retired["has_credentials"] is False
    assert retired["connectivity"] == "retired"
    assert api.call("POST", f"/devices/{device_id}/credentials").status_code == 409
    assert api.call("POST", f"/devices/{device_id}/activate").status_code == 409
    assert api.call("PATCH", f"/devices/{device_id}", json={"name": "x"}).status_code == 409

    audit = api.call(
        "GET", "/audit", role="admin", params={"entity": "device", "entity_id": device_id}
    ).json()["data"]
    states = [(e["action"], (e["after"] or {}).get("state")) for e in reversed(audit)]
    assert states == [
        ("insert", "active"),
        ("update", "active"),  # moved
        ("update", "maintenance"),
        ("update", "active"),
        ("update", "active"),  # credentials rotated
        ("update", "decommissioned"),
    ]
    assert {e["actor"] for e in audit} == {audit[0]["actor"]}
    assert audit[0]["actor"].startswith("user:installer-")
    rotation = audit[1]
    assert "credentials_rotated_at" in rotation["changed"]
    assert all("mqtt_password_hash" not in (e["after"] or {}) for e in audit)
    assert api.call("GET", "/audit", role="operator").status_code == 403


# --- residents -----------------------------------------------------------------------------


def test_residents_are_for_those_who_care(api: Api) -> None:
    resident = {
        "id": unique("r"),
        "community_id": api.community,
        "name": "Mrs Li",
        "vulnerabilities": ["lives_alone", "fall_risk"],
        "contacts": [{"name": "Li Wei", "phone": "+86 138 0000 0000", "relation": "son"}],
    }
    assert api.call("POST", "/residents", json=resident, role="installer").status_code == 403
    created = api.call("POST", "/residents", json=resident, role="admin")
    assert created.status_code == 201, created.text
    bad = api.call(
        "POST",
        "/residents",
        role="admin",
        json={**resident, "id": unique("r"), "vulnerabilities": ["diabetic"]},
    )
    assert bad.status_code == 422
    watch = unique("w")
    linked = api.call(
        "POST",
        "/devices",
        json={
            "id": watch,
            "community_id": api.community,
            "device_class": "wearable",
            "resident_id": resident["id"],
        },
    )
    assert linked.status_code == 201
    smoke = api.call(
        "POST",
        "/devices",
        json={
            "id": unique("f"),
            "community_id": api.community,
            "device_class": "fire",
            "resident_id": resident["id"],
        },
    )
    assert smoke.status_code == 422
    # Installers and viewers see that a watch belongs to someone, not who.
    for role in ("installer", "viewer"):
        assert api.call("GET", f"/residents/{resident['id']}", role=role).status_code == 403
        assert _device(api, watch)["resident_id"] == resident["id"]
    shown = api.call("GET", f"/residents/{resident['id']}", role="operator").json()
    assert shown["name"] == "Mrs Li"
    assert shown["devices"] == [watch]
    api.call("PATCH", f"/residents/{resident['id']}", role="admin", json={"name": "Mrs Li Na"})
    audit = api.call(
        "GET", "/audit", role="admin", params={"entity": "resident", "entity_id": resident["id"]}
    ).json()["data"]
    assert audit[0]["changed"] == ["name", "updated_at"]
    assert audit[0]["after"]["name"] == "[redacted]"
    assert "Mrs Li" not in str(audit)
    assert api.call("DELETE", f"/residents/{resident['id']}", role="admin").status_code == 204
    assert _device(api, watch)["resident_id"] is None


# --- connectivity on a controllable clock ------------------------------------------------------


def test_offline_detection_follows_the_clock(api: Api) -> None:
    device_id = unique("w")
    api.call(
        "POST",
        "/devices",
        json={
            "id": device_id,
            "community_id": api.community,
            "device_class": "wearable",
            "expected_interval_s": 60,
        },
    )

    def arrange(**columns: Any) -> None:
        assignments = ", ".join(f"{k} = %s" for k in columns)
        api.db.execute(
            f"UPDATE devices SET {assignments} WHERE id = %s",
            (*columns.values(), device_id),
        )

    def connectivity_at(now: datetime) -> str:
        api.clock.now = now
        return str(_device(api, device_id)["connectivity"])

    assert connectivity_at(T0) == "never_seen"
    arrange(last_received_at=T0, last_seen=T0, online=True, status_at=T0)
    assert connectivity_at(T0 + timedelta(seconds=90)) == "online"
    assert connectivity_at(T0 + timedelta(seconds=121)) == "silent"
    # The Last Will: offline now, whatever the interval says.
    arrange(online=False, status_at=T0 + timedelta(seconds=10))
    assert connectivity_at(T0 + timedelta(seconds=20)) == "offline"
    # Data after the Will: it reconnected.
    arrange(last_received_at=T0 + timedelta(seconds=30))
    assert connectivity_at(T0 + timedelta(seconds=40)) == "online"

    api.db.execute(
        "INSERT INTO latest (device_id, metric, community_id, ts, value, received_at)"
        " VALUES (%s, 'battery', %s, %s, 12, %s), (%s, 'rssi', %s, %s, -112, %s)",
        (device_id, api.community, T0, T0) * 2,
    )
    api.clock.now = T0 + timedelta(hours=1)
    status = api.call("GET", f"/communities/{api.community}/status", role="viewer").json()
    assert status["at"] == api.clock.now.isoformat().replace("+00:00", "Z")
    entry = next(h for h in status["attention"] if h["id"] == device_id)
    assert entry["problems"] == ["silent", "low_battery", "weak_signal"]
    assert (entry["battery"], entry["rssi"]) == (12, -112)
    assert status["low_battery"] >= 1
    assert status["by_connectivity"]["silent"] >= 1
    assert sum(status["by_connectivity"].values()) == status["devices"]


# --- tokens and users ---------------------------------------------------------------------


def test_tokens_expire_are_revoked_and_die_with_their_user(api: Api) -> None:
    user = api.call(
        "POST",
        "/users",
        role="admin",
        json={"name": unique("ops"), "role": "operator", "communities": [api.community]},
    )
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    made = api.call("POST", f"/users/{user_id}/tokens", role="admin", json={"name": "screen"})
    assert made.status_code == 201
    secret, token_id = made.json()["token"], made.json()["id"]
    own = {"Authorization": f"Bearer {secret}"}
    me = api.client.get("/api/v1/me", headers=own).json()
    assert (me["role"], me["communities"]) == ("operator", [api.community])
    past = api.call(
        "POST", "/me/tokens", role="viewer", json={"name": "x", "expires_at": "2020-01-01T00:00Z"}
    )
    assert past.status_code == 422
    assert api.call("DELETE", f"/tokens/{token_id}", role="admin").status_code == 204
    assert api.client.get("/api/v1/me", headers=own).status_code == 401

    second = api.call("POST", f"/users/{user_id}/tokens", role="admin", json={"name": "2"})
    other = {"Authorization": f"Bearer {second.json()['token']}"}
    assert api.client.get("/api/v1/me", headers=other).status_code == 200
    api.call("PATCH", f"/users/{user_id}", role="admin", json={"disabled": True})
    refused = api.client.get("/api/v1/me", headers=other)
    assert refused.status_code == 401
    assert refused.json() == {"detail": "the token's user is disabled"}
