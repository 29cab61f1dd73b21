"""The alert, rule, maintenance and webhook API against a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts.store import AlertStore
from api.alert_hub import AlertHub
from api.app import create_app
from core.rules import Severity
from core.settings import Settings
from store.accounts import create_token
from tests.integration.alerts_support import T0, setup_devices, sos_change
from tests.servers import running_api

pytestmark = pytest.mark.integration


@pytest.fixture
def api(fresh_database_url: str) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    setup_devices(fresh_database_url, "c1", [("w1", "wearable", "b3"), ("w2", "wearable", None)])
    with psycopg.connect(fresh_database_url) as conn:
        token = create_token(conn, "operator-7")
    with TestClient(create_app(Settings(database_url=fresh_database_url))) as client:
        yield client, {"Authorization": f"Bearer {token}"}, fresh_database_url


def raise_alert(url: str, device: str, at: float) -> None:
    store = AlertStore(url=url, worker="t")
    store.apply([sos_change(device, at, Severity.CRITICAL)], {}, at)
    store.close()


def test_list_filter_ack_resolve_and_the_history(
    api: tuple[TestClient, dict[str, str], str],
) -> None:
    client, auth, url = api
    raise_alert(url, "w1", T0.timestamp())
    raise_alert(url, "w2", T0.timestamp() + 60)
    listed = client.get("/api/v1/alerts", headers=auth, params={"state": "open"}).json()
    assert [a["device_id"] for a in listed["data"]] == ["w2", "w1"]  # newest first
    page = client.get("/api/v1/alerts", headers=auth, params={"limit": 1}).json()
    assert len(page["data"]) == 1
    rest = client.get(
        "/api/v1/alerts", headers=auth, params={"limit": 1, "after": page["next_cursor"]}
    ).json()
    assert rest["data"][0]["device_id"] == "w1"
    only = client.get("/api/v1/alerts", headers=auth, params={"device_id": "w1"}).json()["data"]
    alert_id = only[0]["id"]

    acked = client.post(f"/api/v1/alerts/{alert_id}/ack", headers=auth, json={"note": "on it"})
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "token:operator-7"
    again = client.post(f"/api/v1/alerts/{alert_id}/ack", headers=auth)
    assert again.status_code == 409

    no_note = client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=auth, json={})
    assert no_note.status_code == 422
    assert no_note.json()["detail"][0]["loc"] == ["body", "note"]
    done = client.post(
        f"/api/v1/alerts/{alert_id}/resolve", headers=auth, json={"note": "false alarm, checked"}
    )
    assert done.status_code == 200
    body = done.json()
    assert (body["state"], body["resolution_note"]) == ("resolved", "false alarm, checked")
    assert [(h["action"], h["actor"], h["note"]) for h in body["history"]] == [
        ("raised", "engine", ""),
        ("acknowledged", "token:operator-7", "on it"),
        ("resolved", "token:operator-7", "false alarm, checked"),
    ]
    assert (
        client.post(
            f"/api/v1/alerts/{alert_id}/resolve", headers=auth, json={"note": "x"}
        ).status_code
        == 409
    )
    assert client.get("/api/v1/alerts/999999", headers=auth).status_code == 404
    active = client.get("/api/v1/alerts", headers=auth, params={"active": True}).json()["data"]
    assert [a["device_id"] for a in active] == ["w2"]


def test_rules_crud_with_errors_that_name_the_field(
    api: tuple[TestClient, dict[str, str], str],
) -> None:
    client, auth, _ = api
    rule = {
        "id": "hr.custom",
        "type": "threshold",
        "title": "HR",
        "severity": "major",
        "scope": {"device_class": "wearable", "device": "w1"},
        "metric": "heart_rate",
        "op": ">",
        "raise": 110,
        "clear": 100,
        "for": "5m",
    }
    created = client.post("/api/v1/rules", headers=auth, json=rule)
    assert created.status_code == 201, created.text
    assert created.json()["definition"]["for"] == 300.0
    assert client.post("/api/v1/rules", headers=auth, json=rule).status_code == 409

    bad = client.post("/api/v1/rules", headers=auth, json={**rule, "id": "x", "for": "soon"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "threshold", "for"]
    bad = client.post("/api/v1/rules", headers=auth, json={**rule, "id": "x", "clear": 120})
    assert "clear (120.0) must not be above raise" in bad.json()["detail"][0]["msg"]
    bad = client.post("/api/v1/rules", headers=auth, json={**rule, "id": "x", "metric": "gas_lel"})
    assert "not reported by class 'wearable'" in bad.json()["detail"][0]["msg"]

    replaced = client.put("/api/v1/rules/hr.custom", headers=auth, json={**rule, "raise": 115})
    assert replaced.json()["definition"]["raise"] == 115
    assert replaced.json()["revision"] > created.json()["revision"]
    mismatch = client.put("/api/v1/rules/other", headers=auth, json=rule)
    assert mismatch.status_code == 422
    disabled = client.post("/api/v1/rules/hr.custom/disable", headers=auth).json()
    assert disabled["enabled"] is False
    assert client.get("/api/v1/rules", headers=auth, params={"enabled": False}).json()[0]["id"] == (
        "hr.custom"
    )
    assert client.post("/api/v1/rules/hr.custom/enable", headers=auth).json()["enabled"] is True
    assert client.delete("/api/v1/rules/hr.custom", headers=auth).status_code == 204
    assert client.get("/api/v1/rules/hr.custom", headers=auth).status_code == 404


def test_maintenance_windows(api: tuple[TestClient, dict[str, str], str]) -> None:
    client, auth, _ = api
    ends = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    created = client.post(
        "/api/v1/maintenance",
        headers=auth,
        json={"community_id": "c1", "building": "b3", "ends_at": ends, "reason": "detector swap"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == "token:operator-7"
    both = client.post(
        "/api/v1/maintenance",
        headers=auth,
        json={
            "community_id": "c1", "device_id": "w1", "building": "b3", "ends_at": ends,
            "reason": "x",
        },
    )  # fmt: skip
    assert both.json()["detail"][0]["loc"] == ["body", "building"]
    ghost = client.post(
        "/api/v1/maintenance",
        headers=auth,
        json={"community_id": "c1", "device_id": "ghost", "ends_at": ends, "reason": "x"},
    )
    assert ghost.json()["detail"][0]["loc"] == ["body", "device_id"]
    assert len(client.get("/api/v1/maintenance", headers=auth).json()) == 1
    window_id = created.json()["id"]
    assert client.delete(f"/api/v1/maintenance/{window_id}", headers=auth).status_code == 204
    assert client.get("/api/v1/maintenance", headers=auth).json() == []


def test_webhooks_and_dead_letters(api: tuple[TestClient, dict[str, str], str]) -> None:
    client, auth, url = api
    created = client.post(
        "/api/v1/webhooks", headers=auth, json={"url": "http://127.0.0.1:9/hook"}
    ).json()
    assert len(created["secret"]) >= 32
    assert "secret" not in client.get("/api/v1/webhooks", headers=auth).json()[0]
    bad = client.post("/api/v1/webhooks", headers=auth, json={"url": "ftp://x"})
    assert bad.json()["detail"][0]["loc"] == ["body", "url"]
    raise_alert(url, "w1", T0.timestamp())
    pending = client.get("/api/v1/webhooks/deliveries", headers=auth, params={"state": "pending"})
    assert len(pending.json()) == 1
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE webhook_deliveries SET state = 'dead', attempts = 6")
    dead = client.get("/api/v1/webhooks/deliveries", headers=auth, params={"state": "dead"}).json()
    retried = client.post(f"/api/v1/webhooks/deliveries/{dead[0]['id']}/retry", headers=auth)
    assert retried.json()["state"] == "pending"


@pytest.fixture
def server(
    api: tuple[TestClient, dict[str, str], str],
) -> Iterator[tuple[str, dict[str, str], str, AlertHub]]:
    """The API in a real server: the stream needs a real event loop and socket."""
    _, auth, url = api
    with running_api(Settings(database_url=url)) as server:
        assert server.app is not None
        yield server.url, auth, url, server.app.state.alert_hub


def _read_events(
    base: str, headers: dict[str, str], found: list[dict[str, Any]], ready: threading.Event,
    want: int, params: dict[str, str] | None = None,
) -> None:  # fmt: skip
    import json

    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "GET", f"{base}/api/v1/alerts/stream", headers=headers, params=params
        ) as response,
    ):
        assert response.status_code == 200
        ready.set()
        event: dict[str, Any] = {}
        for line in response.iter_lines():
            if line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line.startswith("id: "):
                event["id"] = line[4:]
            elif line.startswith("event: "):
                event["event"] = line[7:]
            elif not line and "data" in event:
                found.append(event)
                event = {}
                if len(found) >= want:
                    return


def test_the_live_stream_pushes_committed_alerts_and_replays_missed_ones(
    server: tuple[str, dict[str, str], str, AlertHub],
) -> None:
    base, auth, url, hub = server
    assert httpx.get(f"{base}/api/v1/alerts/stream").status_code == 401
    found: list[dict[str, Any]] = []
    ready = threading.Event()
    reader = threading.Thread(target=_read_events, args=(base, auth, found, ready, 1))
    reader.start()
    assert ready.wait(10)
    # The stream subscribes to the hub right after the headers; the hub LISTENs.
    deadline = time.monotonic() + 10
    while not (hub.listening.is_set() and hub.streams >= 1):
        assert time.monotonic() < deadline, "the stream never subscribed"
        time.sleep(0.02)
    started = time.perf_counter()
    raise_alert(url, "w1", T0.timestamp())
    reader.join(10)
    latency = time.perf_counter() - started
    assert [(e["event"], e["data"]["device_id"], e["data"]["state"]) for e in found] == [
        ("raised", "w1", "open")
    ]
    assert latency < 2.0
    # A client that was away asks for what it missed with Last-Event-ID.
    raise_alert(url, "w2", T0.timestamp() + 1)
    missed: list[dict[str, Any]] = []
    again = threading.Thread(
        target=_read_events,
        args=(base, {**auth, "Last-Event-ID": found[0]["id"]}, missed, threading.Event(), 1),
    )
    again.start()
    again.join(10)
    assert [(e["data"]["device_id"], e["data"]["replayed"]) for e in missed] == [("w2", True)]
