"""The dashboard's routes against a real PostgreSQL: the page and its files, building
tiles, service figures in the community's own day, a device's latest values, scoping;
and every API call the page's JavaScript makes, with the parameters it sends."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.dashboard.pages import CONTENT_SECURITY_POLICY, STATIC_DIR
from core.access import Role
from core.settings import Settings
from store.rollups import rebuild_rollups
from tests.integration.dashboard_support import (
    building,
    community,
    device,
    execute,
    fresh,
    insert_alert,
    raise_alert,
    token,
)

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 01:00 on 29 November in Shanghai: 17:00 UTC the day before. A UTC day would put
# 23:30 Shanghai time (15:30 UTC, 28 November) into "today"; the community's does not.
NOW = datetime(2026, 11, 29, 1, 0, tzinfo=SHANGHAI).astimezone(UTC)


@pytest.fixture(scope="module")
def client(database_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as c:
        yield c


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# --- the page ----------------------------------------------------------------------------


def test_the_page_is_served_at_the_root_and_at_dashboard(client: TestClient) -> None:
    for path in ("/", "/dashboard"):
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self';" in CONTENT_SECURITY_POLICY
        assert '<script type="module" src="/dashboard/static/js/main.js">' in page.text
    # What the page loads, and what every module imports, is there with its type.
    html = client.get("/").text
    wanted = set(re.findall(r'(?:src|href)="/dashboard/static/([^"]+)"', html))
    for script in (STATIC_DIR / "js").glob("*.js"):
        wanted |= {f"js/{m}" for m in re.findall(r'from "\./([\w.]+)"', script.read_text())}
    assert {"js/main.js", "app.css", "js/stream.js", "js/chart.js"} <= wanted
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for name in sorted(wanted):
        found = client.get(f"/dashboard/static/{name}")
        assert found.status_code == 200, name
        assert found.headers["content-type"].startswith(types[name[name.rindex(".") :]]), name
        assert found.headers["cache-control"] == "no-cache"


def test_only_the_shipped_files_are_served(client: TestClient) -> None:
    for path in (
        "/dashboard/static/nothing.js",
        "/dashboard/static/%2e%2e/pages.py",
        "/dashboard/static/..%2f..%2fapp.py",
        "/dashboard/static/js",
        "/dashboard/static/",
    ):
        assert client.get(path).status_code == 404, path


def test_no_third_party_code_and_no_build_step() -> None:
    """Plain modules written here: nothing minified, no bundle, no package imports."""
    for path in STATIC_DIR.rglob("*.js"):
        text = path.read_text()
        imports = re.findall(r'^import .* from "([^"]+)";', text, flags=re.MULTILINE)
        assert all(i.startswith("./") for i in imports), (path.name, imports)
        assert max(len(line) for line in text.splitlines()) < 200, f"{path.name} looks minified"
    assert not list(STATIC_DIR.rglob("node_modules"))


# --- building tiles ------------------------------------------------------------------------


def test_overview_counts_devices_and_alerts_per_building_and_class(
    client: TestClient, database_url: str
) -> None:
    c = fresh("c")
    community(database_url, c, "North")
    building(database_url, c, "B1", "Building one")
    building(database_url, c, "B2")
    building(database_url, c, "B5")  # registered, no devices: still a tile
    d = {key: fresh(key) for key in ("on", "off", "never", "door", "loose", "bare", "gone", "old")}
    device(database_url, d["on"], c, "fire", building="B1", presence="online")
    device(database_url, d["off"], c, "fire", building="B1", presence="offline")
    device(database_url, d["never"], c, "wearable", building="B1", presence="never_seen")
    device(
        database_url, d["door"], c, "access", building="B2", presence="online", state="maintenance"
    )
    device(database_url, d["loose"], c, "locker", building="B9", presence="silent")
    device(database_url, d["bare"], c, "wearable", presence="online")
    device(database_url, d["gone"], c, "fire", building="B1", state="decommissioned")
    now = datetime.now(UTC)
    insert_alert(
        database_url, c, severity="critical", raised_at=now, device_id=d["on"], building="B1"
    )
    insert_alert(database_url, c, severity="minor", raised_at=now, building="B1")  # building-wide
    insert_alert(
        database_url, c, state="acknowledged", raised_at=now, device_id=d["door"], building="B2"
    )
    # Neither counts: resolved, and suppressed (maintenance).
    for state in ("resolved", "suppressed"):
        insert_alert(
            database_url, c, state=state, raised_at=now, device_id=d["off"], building="B1",
            resolved_after_s=5 if state == "resolved" else None,
        )  # fmt: skip
    # An alert whose row names no building counts where its device is.
    insert_alert(database_url, c, severity="warning", raised_at=now, device_id=d["bare"])
    secret = token(database_url)

    answer = client.get(f"/api/v1/communities/{c}/overview", headers=auth(secret))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["community_id"], body["name"], body["time_zone"]) == (c, "North", "Asia/Shanghai")
    tiles = {t["id"]: t for t in body["buildings"]}
    assert [t["id"] for t in body["buildings"]] == ["B1", "B2", "B5", "B9", None]

    b1 = tiles["B1"]
    assert (b1["name"], b1["registered"], b1["floors"]) == ("Building one", True, 18)
    assert {k: b1[k] for k in ("devices", "online", "offline", "never_seen", "alerting")} == {
        "devices": 3, "online": 1, "offline": 1, "never_seen": 1, "alerting": 1,
    }  # fmt: skip
    assert (b1["alerts"], b1["open_alerts"], b1["worst_severity"]) == (2, 2, "critical")
    assert b1["by_class"]["fire"] == {
        "devices": 2, "online": 1, "offline": 1, "never_seen": 0, "maintenance": 0, "alerting": 1,
    }  # fmt: skip
    assert b1["by_class"]["wearable"]["never_seen"] == 1
    b2 = tiles["B2"]
    assert (b2["name"], b2["maintenance"], b2["alerting"]) == ("B2", 1, 1)
    assert (b2["alerts"], b2["open_alerts"], b2["worst_severity"]) == (1, 0, "major")
    assert (tiles["B5"]["devices"], tiles["B5"]["alerts"], tiles["B5"]["worst_severity"]) == (
        0, 0, None,
    )  # fmt: skip
    b9 = tiles["B9"]
    assert (b9["registered"], b9["offline"], list(b9["by_class"])) == (False, 1, ["locker"])
    unplaced = tiles[None]
    assert (unplaced["devices"], unplaced["online"], unplaced["alerts"]) == (1, 1, 1)
    assert unplaced["worst_severity"] == "warning"
    assert body["totals"] == {
        "devices": 6, "online": 3, "offline": 2, "never_seen": 1, "maintenance": 1, "alerting": 3,
    }  # fmt: skip


# --- service figures ---------------------------------------------------------------------


def test_figures_count_the_communitys_own_day_and_month(database_url: str) -> None:
    c = fresh("c")
    community(database_url, c)
    for presence in ("online", "online", "offline", "silent", "never_seen"):
        device(database_url, fresh("d"), c, "fire", presence=presence, now=NOW)
    early = datetime(2026, 11, 29, 0, 30, tzinfo=SHANGHAI)  # today, local
    late = datetime(2026, 11, 28, 23, 30, tzinfo=SHANGHAI)  # yesterday, local; same UTC day
    insert_alert(database_url, c, severity="critical", raised_at=early)  # open
    insert_alert(database_url, c, raised_at=early, state="acknowledged", acknowledged_after_s=60)
    insert_alert(database_url, c, raised_at=early, state="acknowledged", acknowledged_after_s=180)
    insert_alert(database_url, c, raised_at=early, state="resolved", acknowledged_after_s=120,
                 resolved_after_s=600)  # fmt: skip
    # Resolved by the engine (condition cleared): nobody's time, not in the median.
    insert_alert(database_url, c, raised_at=early, state="resolved", resolved_after_s=5,
                 resolved_by="engine")  # fmt: skip
    insert_alert(database_url, c, raised_at=early, state="suppressed")  # maintenance
    insert_alert(database_url, c, raised_at=late, state="resolved", acknowledged_after_s=30,
                 resolved_after_s=1200)  # fmt: skip
    insert_alert(
        database_url,
        c,
        raised_at=datetime(2026, 10, 31, 12, tzinfo=SHANGHAI),
        state="resolved",
        acknowledged_after_s=5,
        resolved_after_s=7,
    )  # last month
    other = fresh("c")  # another community's alerts never count here
    community(database_url, other)
    insert_alert(database_url, other, severity="critical", raised_at=early)

    app = create_app(Settings(database_url=database_url))
    app.state.clock = lambda: NOW
    with TestClient(app) as client:
        answer = client.get(f"/api/v1/communities/{c}/figures", headers=auth(token(database_url)))
    assert answer.status_code == 200, answer.text
    f = answer.json()
    assert datetime.fromisoformat(f["day_start"]) == datetime(2026, 11, 29, tzinfo=SHANGHAI)
    assert datetime.fromisoformat(f["month_start"]) == datetime(2026, 11, 1, tzinfo=SHANGHAI)
    assert (f["open_alerts"], f["open_critical"], f["acknowledged_alerts"]) == (1, 1, 2)
    assert (f["alerts_today"], f["alerts_month"]) == (5, 6)
    # Acknowledged today after 60, 180 and 120 s; this month also after 30 s.
    assert (f["ack_median_s_today"], f["ack_median_s_month"]) == (120.0, 90.0)
    # Resolved by a person today after 600 s; this month also after 1200 s.
    assert (f["resolve_median_s_today"], f["resolve_median_s_month"]) == (600.0, 900.0)
    assert (f["devices"], f["devices_online"], f["devices_offline"], f["devices_never_seen"]) == (
        5, 2, 2, 1,
    )  # fmt: skip


def test_figures_without_acknowledgements_have_no_median(
    client: TestClient, database_url: str
) -> None:
    c = fresh("c")
    community(database_url, c)
    insert_alert(database_url, c, raised_at=datetime.now(UTC) - timedelta(minutes=5))
    f = client.get(f"/api/v1/communities/{c}/figures", headers=auth(token(database_url))).json()
    assert (f["open_alerts"], f["alerts_today"]) == (1, 1)
    assert f["ack_median_s_today"] is None
    assert f["resolve_median_s_month"] is None
    assert (f["devices"], f["devices_offline"]) == (0, 0)


# --- a device's latest values ----------------------------------------------------------------


def test_device_latest_values_carry_their_units(client: TestClient, database_url: str) -> None:
    c, d = fresh("c"), fresh("w")
    community(database_url, c)
    device(database_url, d, c, "wearable")
    ts = datetime(2026, 11, 29, 3, tzinfo=UTC)
    for metric, value in (("heart_rate", 72.0), ("battery", 81.0), ("worn", 1.0)):
        execute(
            database_url,
            "INSERT INTO latest (device_id, metric, community_id, ts, value, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (d, metric, c, ts, value, ts + timedelta(seconds=1)),
        )
    body = client.get(f"/api/v1/devices/{d}/latest", headers=auth(token(database_url))).json()
    assert (body["device_id"], body["device_class"]) == (d, "wearable")
    assert [(m["metric"], m["unit"], m["value"]) for m in body["data"]] == [
        ("battery", "%", 81.0),
        ("heart_rate", "beat/min", 72.0),
        ("worn", "", 1.0),
    ]
    assert datetime.fromisoformat(body["data"][0]["ts"]) == ts
    missing = client.get(f"/api/v1/devices/{fresh('no')}/latest", headers=auth(token(database_url)))
    assert missing.status_code == 404


# --- scope ---------------------------------------------------------------------------------


def test_an_operator_of_a_gets_nothing_of_b(client: TestClient, database_url: str) -> None:
    a, b = fresh("ca"), fresh("cb")
    for c in (a, b):
        community(database_url, c)
        building(database_url, c, "B1")
    da, db = fresh("da"), fresh("db")
    device(database_url, da, a, "fire", building="B1")
    device(database_url, db, b, "fire", building="B1")
    insert_alert(database_url, b, raised_at=datetime.now(UTC), device_id=db, building="B1")
    operator = auth(token(database_url, Role.OPERATOR, [a]))
    viewer = auth(token(database_url, Role.VIEWER, [a]))
    for headers in (operator, viewer):
        for path in (
            f"/communities/{a}/overview",
            f"/communities/{a}/figures",
            f"/devices/{da}/latest",
        ):
            assert client.get(f"/api/v1{path}", headers=headers).status_code == 200, path
    nowhere = fresh("none")
    for path, missing in (
        (f"/communities/{b}/overview", f"/communities/{nowhere}/overview"),
        (f"/communities/{b}/figures", f"/communities/{nowhere}/figures"),
        (f"/devices/{db}/latest", f"/devices/{nowhere}/latest"),
    ):
        hidden = client.get(f"/api/v1{path}", headers=operator)
        absent = client.get(f"/api/v1{missing}", headers=operator)
        assert hidden.status_code == absent.status_code == 404
        assert hidden.json()["detail"].replace(b, "X").replace(db, "X") == absent.json()[
            "detail"
        ].replace(nowhere, "X")
    assert client.get(f"/api/v1/communities/{a}/overview").status_code == 401


# --- every call the page makes ---------------------------------------------------------------

_CALL = re.compile(r"\bapi(?:All)?\(\s*[`\"](/[^`\"]*)[`\"]")


def calls_in_the_page() -> set[str]:
    """The API paths the page's modules call, ``${...}`` written as ``{}``."""
    found: set[str] = set()
    for script in (STATIC_DIR / "js").glob("*.js"):
        for path in _CALL.findall(script.read_text()):
            found.add(re.sub(r"\$\{[^}]*\}", "{}", path))
    return found


def test_every_call_the_page_makes_answers(client: TestClient, database_url: str) -> None:
    c = fresh("c")
    community(database_url, c, "Page", "Europe/London")
    building(database_url, c, "B1", "One")
    w = fresh("w")
    device(database_url, w, c, "wearable", building="B1")
    resident = fresh("r")
    execute(
        database_url,
        "INSERT INTO residents (id, community_id, name) VALUES (%s, %s, 'Mrs Li')",
        (resident, c),
    )
    execute(database_url, "UPDATE devices SET resident_id = %s WHERE id = %s", (resident, w))
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [(w, "heart_rate", now - timedelta(minutes=m), 70.0 + m % 5, now) for m in range(1, 91)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (device_id, metric, ts, value, received_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                rows,
            )
        conn.execute(
            "INSERT INTO device_events (device_id, ts, event, data, received_at)"
            " VALUES (%s, %s, 'sos_pressed', '{}', %s)",
            (w, now - timedelta(minutes=3), now),
        )
        conn.execute(
            "INSERT INTO latest (device_id, metric, community_id, ts, value, received_at)"
            " VALUES (%s, 'heart_rate', %s, %s, 72, %s)",
            (w, c, now, now),
        )
        # Written around the ingest writer: the rollups learn of the rows this way.
        rebuild_rollups(conn, now - timedelta(hours=3), now)
    first = raise_alert(database_url, c, w, building="B1", at=now - timedelta(minutes=3))
    second = insert_alert(database_url, c, raised_at=now, device_id=w, building="B1")
    headers = auth(token(database_url, Role.OPERATOR, [c]))
    iso = {"start": (now - timedelta(hours=6)).isoformat(), "end": now.isoformat()}
    week = {"start": (now - timedelta(days=7)).isoformat(), "end": now.isoformat()}

    def get(path: str, **params: Any) -> Any:
        answer = client.get(f"/api/v1{path}", headers=headers, params=params)
        assert answer.status_code == 200, (path, params, answer.text)
        return answer.json()

    # The parameters are the ones the modules send (apiAll adds limit=1000 and after).
    page = {"limit": 1000}
    exercised: dict[str, Callable[[], Any]] = {
        "/me": lambda: get("/me"),
        "/communities": lambda: get("/communities", **page),
        "/alerts": lambda: [
            get("/alerts", active="true", **page),
            get("/alerts", state="resolved", since=iso["start"], **page),
            get("/alerts", device_id=w, limit=20),
        ],
        "/alerts/{}": lambda: get(f"/alerts/{first}"),
        "/alerts/{}/ack": lambda: client.post(
            f"/api/v1/alerts/{first}/ack", headers=headers, json={"note": ""}
        ).json(),
        "/alerts/{}/resolve": lambda: client.post(
            f"/api/v1/alerts/{second}/resolve", headers=headers, json={"note": "checked"}
        ).json(),
        "/devices": lambda: get("/devices", community_id=c, **page),
        "/devices/{}": lambda: get(f"/devices/{w}"),
        "/devices/{}/latest": lambda: get(f"/devices/{w}/latest"),
        "/devices/{}/readings": lambda: get(
            f"/devices/{w}/readings", metric="heart_rate", **iso, **page
        ),
        "/devices/{}/aggregates": lambda: [
            get(
                f"/devices/{w}/aggregates",
                metric="heart_rate",
                bucket=bucket,
                agg=agg,
                **span,
                **page,
            )
            for bucket, span in (
                ("1h", week),
                ("1d", {**week, "start": (now - timedelta(days=30)).isoformat()}),
            )
            for agg in ("avg", "min", "max")
        ],
        "/devices/{}/events": lambda: get(f"/devices/{w}/events", **week, **page),
        "/communities/{}/buildings": lambda: get(f"/communities/{c}/buildings", **page),
        "/communities/{}/figures": lambda: get(f"/communities/{c}/figures"),
        "/communities/{}/overview": lambda: get(f"/communities/{c}/overview"),
        "/residents/{}": lambda: get(f"/residents/{resident}"),
        "/incidents": lambda: get("/incidents", community_id=c, open="true"),
        "/communities/{}/duty": lambda: get(f"/communities/{c}/duty"),
    }
    assert calls_in_the_page() == set(exercised), "a call of the page is not tested here"
    answers = {path: call() for path, call in exercised.items()}
    assert [a["id"] for a in answers["/alerts"][0]["data"]] == [second, first]
    assert answers["/alerts/{}/ack"]["state"] == "acknowledged"
    assert answers["/alerts/{}/resolve"]["state"] == "resolved"
    assert [h["action"] for h in answers["/alerts/{}"]["history"]] == ["raised"]
    assert len(answers["/devices/{}/readings"]["data"]) == 90
    hourly = answers["/devices/{}/aggregates"][0]
    assert (hourly["bucket"], hourly["time_zone"]) == ("1h", "Europe/London")
    assert sum(b["count"] for b in hourly["data"]) == 90
    assert [e["event"] for e in answers["/devices/{}/events"]["data"]] == ["sos_pressed"]
    assert answers["/communities/{}/overview"]["buildings"][0]["name"] == "One"
    assert answers["/me"]["role"] == "operator"
