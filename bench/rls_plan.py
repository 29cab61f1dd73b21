"""What row-level security on the time series costs the API's queries, in one run.

    .venv/bin/python bench/rls_plan.py [--devices 200] [--hours 24] [--repeat 20]

Builds a scratch database (``sc_rlsbench_<random>`` on ``--database-url``, dropped
afterwards) with the platform's schema (plain PostgreSQL; the policies on
``readings`` are not installed on TimescaleDB), two communities of ``--devices``/2
wearables each and one ``heart_rate`` reading a minute per device for ``--hours``
hours (200 devices x 24 h = 288,000 readings), in day partitions.

Then, as the API runs them (role ``sc_api``, ``sc.communities`` = one community),
the API's own statements: one device's raw readings over an hour
(``/devices/{id}/readings``), a community's readings over an hour
(``/communities/{id}/readings``), one device's 1-minute buckets over six hours and
its hourly buckets over the whole range (``/devices/{id}/aggregates``). Each runs
``--repeat`` times on random devices of that community, with the policies of
migration 0008 switched off (before) and on (after); printed: the median round trip
and the plan's nodes with the policies on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scratch import scratch_database
from core.storage import Bucket
from store import schema
from store.series import COMMUNITY_READINGS, DEVICE_READINGS, Agg, plan_buckets

Conn = psycopg.Connection[Any]
COMMUNITIES = ("rls-a", "rls-b")
# Switched off for "before", on for "after": every policy migration 0008 adds that
# these queries meet (the views then read as their caller).
_TOGGLE = (
    "ALTER TABLE readings {0} ROW LEVEL SECURITY",
    "ALTER TABLE rollup_hourly {0} ROW LEVEL SECURITY",
    "ALTER VIEW readings_1h SET (security_invoker = {1})",
)


def _load(conn: Conn, devices: int, hours: int, start: datetime) -> None:
    conn.execute(
        "INSERT INTO communities (id, name) SELECT c, c FROM unnest(%s::text[]) AS c",
        (list(COMMUNITIES),),
    )
    conn.execute(
        "INSERT INTO devices (id, community_id, device_class)"
        " SELECT 'w' || lpad(n::text, 5, '0'), (%s::text[])[1 + n %% 2], 'wearable'"
        " FROM generate_series(0, %s - 1) AS n",
        (list(COMMUNITIES), devices),
    )
    day = start.date()
    while day <= (start + timedelta(hours=hours)).date():
        conn.execute("SELECT sc_ensure_day_partition('readings', %s)", (day,))
        day += timedelta(days=1)
    conn.execute(
        "INSERT INTO readings (device_id, metric, ts, value, seq, received_at)"
        " SELECT d.id, 'heart_rate', t, 60 + random() * 40, 0, t"
        " FROM devices AS d, generate_series(%s::timestamptz,"
        " %s::timestamptz - interval '1 minute', interval '1 minute') AS t",
        (start, start + timedelta(hours=hours)),
    )
    conn.execute("ANALYZE")


def _statements(conn: Conn, start: datetime, hours: int) -> dict[str, Callable[[str], Any]]:
    """name -> (device) -> (query, params), the API's statements for one device's community."""
    hour = (start + timedelta(hours=hours // 2), start + timedelta(hours=hours // 2 + 1))
    minute = plan_buckets(conn, Bucket.MINUTE, Agg.AVG, "UTC").query
    hourly = plan_buckets(conn, Bucket.HOUR, Agg.AVG, "UTC").query
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def buckets(device: str, lo: datetime, hi: datetime) -> dict[str, Any]:
        return {
            "devices": [device],
            "metric": "heart_rate",
            "lo": lo,
            "hi": hi,
            "after_bucket": epoch,
            "after_device": "",
            "limit": 1001,
            "origin": epoch,
        }

    return {
        "device readings, 1 h": lambda d: (
            DEVICE_READINGS.format(sql.SQL("")),
            [d, hour[0], hour[1], 1001],
        ),
        "community readings, 1 h": lambda d: (
            COMMUNITY_READINGS,
            {
                "community": COMMUNITIES[0],
                "metric": "heart_rate",
                "start": hour[0],
                "end": hour[1],
                "after_ts": epoch,
                "after_device": "",
                "limit": 1001,
            },
        ),
        "device 1m buckets, 6 h": lambda d: (
            minute,
            buckets(d, hour[0], hour[0] + timedelta(hours=6)),
        ),
        "device 1h buckets, all": lambda d: (
            hourly,
            buckets(d, start, start + timedelta(hours=hours)),
        ),
    }


def _plan_nodes(conn: Conn, query: Any, params: Any) -> str:
    """The node types of the plan, depth-first: what the policy added shows here."""
    explain = sql.SQL("EXPLAIN (FORMAT JSON) ") + (
        sql.SQL(query) if isinstance(query, str) else query
    )
    row = conn.execute(explain, params).fetchone()
    assert row is not None
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"]
        if "Relation Name" in node:
            label += f"({node['Relation Name']})"
        nodes.append(label)
        for child in node.get("Plans", []):
            walk(child)

    walk(row[0][0]["Plan"])
    return " > ".join(nodes[:8]) + (" ..." if len(nodes) > 8 else "")


def _median_ms(
    conn: Conn, make: Callable[[str], Any], devices: Sequence[str], repeat: int
) -> float:
    samples = []
    for _ in range(repeat):
        query, params = make(random.choice(devices))
        began = time.perf_counter()
        conn.execute(query, params).fetchall()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SC_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    with scratch_database(args.database_url, "sc_rlsbench") as name:
        url = psycopg.conninfo.make_conninfo(args.database_url, dbname=name)
        schema.upgrade(url)
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            hours=args.hours
        )
        with psycopg.connect(url, autocommit=True) as owner:
            began = time.perf_counter()
            _load(owner, args.devices, args.hours, start)
            count = owner.execute("SELECT count(*) FROM readings").fetchone()
            took = time.perf_counter() - began
            print(f"loaded {count[0] if count else 0:,} readings in {took:.1f} s")
            mine = [
                r[0]
                for r in owner.execute(
                    "SELECT id FROM devices WHERE community_id = %s", (COMMUNITIES[0],)
                )
            ]
            with psycopg.connect(url, autocommit=True) as api:
                api.execute("SET ROLE sc_api")
                api.execute(
                    "SELECT set_config('sc.communities', %s, false)",
                    (json.dumps([COMMUNITIES[0]]),),
                )
                statements = _statements(api, start, args.hours)
                # {label: [before, after]}; each the better of two rounds, so that
                # neither side pays for warming the cache alone.
                results = {k: [float("inf"), float("inf")] for k in statements}
                plans: dict[str, str] = {}
                for _round in range(2):
                    for side, (switch, invoker) in enumerate(
                        (("DISABLE", "false"), ("ENABLE", "true"))
                    ):
                        for toggle in _TOGGLE:
                            owner.execute(toggle.format(switch, invoker).encode())
                        for label, make in statements.items():
                            ms = _median_ms(api, make, mine, args.repeat)
                            results[label][side] = min(results[label][side], ms)
                            if side == 1:
                                plans[label] = _plan_nodes(api, *make(mine[0]))
        header = "query (as sc_api, one community)"
        print(f"{header:<28} {'before ms':>10} {'after ms':>10} {'ratio':>6}")
        for label, (before, after) in results.items():
            print(f"{label:<28} {before:>10.2f} {after:>10.2f} {after / before:>6.2f}")
        print("plans with the policies on:")
        for label, plan in plans.items():
            print(f"  {label}: {plan}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
