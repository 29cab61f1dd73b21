"""Visits end to end on a real PostgreSQL: a simulated 300-resident month through the API,
the CLI and the report; device check-ins; follow-ups; the visit rule on a fixed clock."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts.store import AlertStore
from alerts.visit_check import VISIT_RULE, VisitCheck
from api.app import create_app
from api.routes.reports import build_report, flatten
from core.settings import Settings
from core.visits import Month
from smartcommunity.commands.visits import simulate_month
from store.accounts import create_token
from tests.integration.support import ROOT, add_community

pytestmark = pytest.mark.integration

BJ = ZoneInfo("Asia/Shanghai")
NOV = Month(2026, 11)
AS_OF_TIME = datetime(2026, 11, 26, 18, tzinfo=BJ)  # after the deadline day, before month end
AS_OF = AS_OF_TIME.isoformat()


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def client(database_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app = create_app(Settings(database_url=database_url))
    app.state.clock = lambda: AS_OF_TIME
    with TestClient(app) as c, psycopg.connect(database_url, autocommit=True) as conn:
        token = create_token(conn, "visits")
        yield c, {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def month300(db: psycopg.Connection[Any], client: Any) -> str:
    community = "visits300"
    counts = simulate_month(db, community, NOV, residents=300, seed=7, until=AS_OF_TIME)
    assert counts[0] == 300
    assert counts[1] > 300
    return community


def test_a_simulated_month_gives_rate_lists_and_figures(
    client: tuple[TestClient, dict[str, str]], month300: str
) -> None:
    c, headers = client
    answer = c.get(
        f"/api/v1/visits/coverage?community_id={month300}&month=2026-11", headers=headers
    )
    assert answer.status_code == 200, answer.text
    cov = answer.json()
    assert cov["residents"] == 300
    assert 0.85 < cov["visit_rate"] < 1.0
    assert cov["visited"] == round(cov["visit_rate"] * 300)
    assert cov["overdue"], "some residents are never scheduled"
    assert all(r["standing"] == "overdue" for r in cov["overdue"])
    assert all(r["name"] for r in cov["overdue"])
    assert cov["policy_met"] <= cov["visited"]
    report = c.get(f"/api/v1/communities/{month300}/report?month=2026-11", headers=headers)
    assert report.status_code == 200, report.text
    figures = report.json()
    assert figures["visits"]["visit_rate"] == cov["visit_rate"]
    assert figures["visits"]["overdue"] == len(cov["overdue"])
    assert figures["alerts"]["total"] > 50
    assert figures["alerts"]["ack_median_s"] < figures["alerts"]["ack_p90_s"]
    assert set(figures["alerts"]["by_class_severity"]) == {"access", "fire", "locker", "wearable"}
    assert figures["devices"]["online_share"] == 0.9
    # CSV export round-trips to the JSON's figures.
    exported = c.get(
        f"/api/v1/communities/{month300}/report?month=2026-11&format=csv", headers=headers
    )
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["figure", "value"]
    parsed = dict(rows[1:])
    assert float(parsed["visits.visit_rate"]) == cov["visit_rate"]
    assert float(parsed["alerts.ack_p90_s"]) == figures["alerts"]["ack_p90_s"]
    assert (
        int(parsed["alerts.by_class_severity.fire.critical"])
        == (figures["alerts"]["by_class_severity"]["fire"]["critical"])
    )
    page = c.get(
        f"/api/v1/communities/{month300}/report?month=2026-11&format=html", headers=headers
    )
    assert page.headers["content-type"].startswith("text/html")
    assert "@media print" in page.text
    assert "Elderly care visits" in page.text


def test_csv_round_trips_every_figure(db: psycopg.Connection[Any], month300: str) -> None:
    from api.routes.reports import render_csv

    report = build_report(db, month300, NOV, AS_OF_TIME)
    assert report is not None
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert dict(rows[1:]) == flatten(report)
    assert len(rows) - 1 == len(flatten(report))


def test_cli_report_and_due_list(database_url: str, month300: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
    env["SC_DATABASE_URL"] = database_url

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "smartcommunity.cli", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout

    month = ["--community", month300, "--month", "2026-11", "--as-of", AS_OF]
    out = cli("report", *month)
    assert "visit rate" in out
    assert "acked within 3 min" in out
    due = cli("visits", "due", *month)
    assert "overdue (" in due


def _resident(db: psycopg.Connection[Any], community: str, rid: str, policy: str) -> None:
    add_community(db, community)
    db.execute(
        "INSERT INTO residents (id, community_id, name, visit_policy) VALUES (%s, %s, %s, %s)",
        (rid, community, f"Name of {rid}", policy),
    )


def test_device_checkins_become_visits_once(
    db: psycopg.Connection[Any], client: tuple[TestClient, dict[str, str]], unique_id: str
) -> None:
    c, headers = client
    community = f"c{unique_id}"
    _resident(db, community, f"{unique_id}-r1", "monthly")
    db.execute(
        "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'access')",
        (f"{unique_id}-tag", community),
    )
    at = datetime(2026, 11, 3, 2, tzinfo=UTC)
    db.execute(
        "INSERT INTO device_events (device_id, ts, event, data, received_at)"
        " VALUES (%s, %s, 'visit_checkin', %s, now()), (%s, %s, 'visit_checkin', %s, now())",
        (
            f"{unique_id}-tag",
            at,
            psycopg.types.json.Jsonb({"worker": "w7", "resident": f"{unique_id}-r1"}),
            f"{unique_id}-tag",
            at + timedelta(hours=1),
            psycopg.types.json.Jsonb({"worker": "w7", "resident": "somebody-else"}),
        ),
    )
    for _ in range(2):
        answer = c.get(f"/api/v1/visits?community_id={community}", headers=headers)
        assert answer.status_code == 200
        visits = answer.json()["data"]
        assert [(v["source"], v["worker"], v["outcome"]) for v in visits] == [
            ("device", "w7", "well")
        ]
    cov = c.get(f"/api/v1/visits/coverage?community_id={community}", headers=headers).json()
    assert cov["visit_rate"] == 1.0


def test_follow_up_opens_and_the_next_visit_closes_it(
    db: psycopg.Connection[Any], client: tuple[TestClient, dict[str, str]], unique_id: str
) -> None:
    c, headers = client
    community, rid = f"c{unique_id}", f"{unique_id}-r1"
    _resident(db, community, rid, "weekly")
    body = {
        "resident_id": rid,
        "worker": "w1",
        "started_at": "2026-11-10T10:00:00+08:00",
        "outcome": "needs_follow_up",
        "notes": "out of insulin",
    }
    made = c.post("/api/v1/visits", json=body, headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["follow_up_due"] == "2026-11-17"
    tasks = c.get(f"/api/v1/visits/follow-ups?community_id={community}", headers=headers)
    assert [t["resident_id"] for t in tasks.json()["data"]] == [rid]
    again = {**body, "started_at": "2026-11-16T10:00:00+08:00", "outcome": "well"}
    assert c.post("/api/v1/visits", json=again, headers=headers).status_code == 201
    tasks = c.get(f"/api/v1/visits/follow-ups?community_id={community}", headers=headers)
    assert tasks.json()["data"] == []
    unknown = c.post("/api/v1/visits", json={**body, "resident_id": "nobody"}, headers=headers)
    assert unknown.status_code == 422


def test_the_visit_rule_warns_escalates_and_clears_on_a_fixed_clock(
    database_url: str, db: psycopg.Connection[Any], unique_id: str
) -> None:
    community = f"c{unique_id}"
    for i in (1, 2):
        _resident(db, community, f"{unique_id}-r{i}", "monthly")
    db.execute(
        "INSERT INTO visits (community_id, resident_id, worker, started_at, outcome)"
        " VALUES (%s, %s, 'w1', %s, 'well')",
        (community, f"{unique_id}-r1", datetime(2026, 11, 5, 10, tzinfo=BJ)),
    )
    check = VisitCheck(topic_filter=f"community/{community}/+/+/+")
    store = AlertStore(url=database_url, worker=f"visits-{unique_id}")

    def step(now: datetime) -> list[tuple[str, str, str]]:
        changes = store.run(lambda conn: check.run(conn, now))
        store.apply(changes, {}, now.timestamp())
        return [
            (row[0], row[1], row[2])
            for row in db.execute(
                "SELECT subject, severity, state FROM alerts WHERE rule_id = %s"
                " AND community_id = %s ORDER BY id",
                (VISIT_RULE.id, community),
            )
        ]

    try:
        subject = f"resident:{unique_id}-r2/2026-11"
        assert step(datetime(2026, 11, 24, 23, 59, tzinfo=BJ)) == []
        assert step(datetime(2026, 11, 25, 0, 1, tzinfo=BJ)) == [(subject, "warning", "open")]
        assert step(datetime(2026, 11, 27, tzinfo=BJ)) == [(subject, "warning", "open")]
        db.execute(
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now() WHERE subject = %s",
            (subject,),
        )
        # Month end: escalated, and the acknowledged warning opens again.
        assert step(datetime(2026, 11, 30, 8, tzinfo=BJ)) == [(subject, "major", "open")]
        history = db.execute(
            "SELECT h.action FROM alert_history AS h JOIN alerts AS a ON a.id = h.alert_id"
            " WHERE a.subject = %s ORDER BY h.id",
            (subject,),
        ).fetchall()
        assert [h[0] for h in history] == ["raised", "severity_raised"]
        db.execute(
            "INSERT INTO visits (community_id, resident_id, worker, started_at, outcome)"
            " VALUES (%s, %s, 'w1', %s, 'well')",
            (community, f"{unique_id}-r2", datetime(2026, 11, 30, 9, tzinfo=BJ)),
        )
        assert step(datetime(2026, 11, 30, 10, tzinfo=BJ)) == [(subject, "major", "resolved")]
    finally:
        store.close()
