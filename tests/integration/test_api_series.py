"""The HTTP API against a real PostgreSQL: readings and events, dead letters, metrics."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from core.observability import PipelineCounters
from tests.exposition import parse_exposition
from tests.integration.api_support import (
    BASE,
    auth_fixture,  # noqa: F401 - the auth fixture
    client_fixture,  # noqa: F401 - the client fixture
    community_fixture,  # noqa: F401 - the community fixture
    db_fixture,  # noqa: F401 - the db fixture
    iso,
    register,
    settings_fixture,  # noqa: F401 - the settings fixture
    token_fixture,  # noqa: F401 - the token fixture
    unique,
)
from tests.integration.support import one_row

pytestmark = pytest.mark.integration


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
    row = one_row(
        db,
        "INSERT INTO dead_letters (received_at, topic, payload, reason, detail, worker)"
        " VALUES (%s, 'community/c1/fire/f1/telemetry', %s, %s, 'because', 'w1') RETURNING id",
        (received_at, payload, reason),
    )
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
