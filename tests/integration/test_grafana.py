"""The Grafana dashboard (deploy/grafana/) against the live schema: every panel's SQL and
every variable's query runs, Grafana's macros substituted as its PostgreSQL data source
does, and finds the rows a small community's data puts there."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from store.rollups import rebuild_rollups
from tests.integration.dashboard_support import community, device, execute, fresh, insert_alert

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "smartcommunity.json"
_TIME_FILTER = re.compile(r"\$__timeFilter\(\s*([^)]+?)\s*\)")
_TIME_GROUP_ALIAS = re.compile(r"\$__timeGroupAlias\(\s*([^,]+?)\s*,\s*'?(\d+)([smhd])'?\s*\)")
_VARIABLE = re.compile(r"\$\{(\w+):sqlstring\}|\$(?!__)(\w+)\b")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand(raw: str, start: datetime, end: datetime, variables: dict[str, str]) -> str:
    """``raw`` as Grafana sends it: macros first, then the template variables."""
    frm, to = _literal(start.isoformat()), _literal(end.isoformat())
    sql = _TIME_FILTER.sub(lambda m: f"{m[1]} BETWEEN {frm} AND {to}", raw)
    sql = _TIME_GROUP_ALIAS.sub(
        lambda m: (
            f"floor(extract(epoch from {m[1]})/{int(m[2]) * _SECONDS[m[3]]})"
            f'*{int(m[2]) * _SECONDS[m[3]]} AS "time"'
        ),
        sql,
    )
    sql = sql.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
    # ${name:sqlstring} is quoted and escaped; a bare $name is put in as it is.
    sql = _VARIABLE.sub(
        lambda m: _literal(variables[m[1]]) if m[1] else variables[m[2]],
        sql,
    )
    assert "$" not in sql, f"a macro or variable the test does not know: {sql}"
    return sql


@pytest.fixture
def world(database_url: str) -> dict[str, str]:
    """A community with a device, its readings of the last hours, a dead letter and an
    open alert: something for every panel to find."""
    c, d = fresh("c"), fresh("d")
    community(database_url, c)
    device(database_url, d, c, "wearable")
    now = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO readings (device_id, metric, ts, value, received_at)"
            " VALUES (%s, 'heart_rate', %s, %s, %s)",
            [
                (d, now - timedelta(minutes=m), 60 + m % 7, now - timedelta(minutes=m))
                for m in range(5, 180, 5)
            ],
        )
        rebuild_rollups(conn, now - timedelta(hours=4), now)
    reason = fresh("bad_json")
    execute(
        database_url,
        "INSERT INTO dead_letters (received_at, topic, payload, reason, detail)"
        " VALUES (now(), %s, '\\x7b'::bytea, %s, 'test')",
        (f"community/{c}/wearable/{d}/telemetry", reason),
    )
    insert_alert(database_url, c, raised_at=now - timedelta(minutes=3), device_id=d)
    execute(
        database_url,
        "INSERT INTO pipeline_metrics (worker, updated_at, counters) VALUES (%s, now(), %s)",
        (fresh("worker"), json.dumps({"messages_received_total": 3, "rows_written_total": 9})),
    )
    return {"community": c, "device": d, "reason": reason}


def _run(url: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.encode())
        assert cur.description is not None
        return [col.name for col in cur.description], cur.fetchall()


def test_every_panel_and_variable_runs_against_the_schema(
    database_url: str, world: dict[str, str]
) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    end = datetime.now(UTC)
    start = end - timedelta(hours=6)
    variables = {"community": world["community"], "device": world["device"]}

    for variable in dashboard["templating"]["list"]:
        _, rows = _run(database_url, expand(variable["query"], start, end, variables))
        assert variables[variable["name"]] in {str(r[0]) for r in rows}, variable["name"]

    found: dict[str, list[tuple[Any, ...]]] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            columns, rows = _run(database_url, expand(target["rawSql"], start, end, variables))
            if target["format"] == "time_series":
                assert columns[0] == "time", panel["title"]
            found[panel["title"].replace("$device", "device")] = rows
    assert len(found) == len(dashboard["panels"]) == 6

    def rows_of(prefix: str) -> list[tuple[Any, ...]]:
        return next(rows for title, rows in found.items() if title.startswith(prefix))

    assert sum(r[1] for r in rows_of("Ingest rate")) * 60 >= 35  # this test's rows at least
    assert any(r[1] == world["reason"] for r in rows_of("Dead letters by reason"))
    assert (world["community"], 1, 0) in rows_of("Open alerts by community")
    hourly = rows_of("Device device: hourly")
    assert hourly
    assert {r[1] for r in hourly} == {"heart_rate"}
    assert rows_of("Device device: daily")
    assert rows_of("Pipeline workers")


def test_the_expander_fails_on_what_it_does_not_know() -> None:
    now = datetime.now(UTC)
    with pytest.raises(KeyError):
        expand("SELECT ${nobody:sqlstring}", now, now, {})
    with pytest.raises(AssertionError, match="does not know"):
        expand("SELECT $__unixEpochFilter(ts)", now, now, {})
    assert expand("WHERE $__timeFilter(ts)", now, now, {}).startswith("WHERE ts BETWEEN '")
