"""Query latency of the platform's storage against a naive design, in one run.

    .venv/bin/python bench/query.py [--days 30] [--devices 100] [--community 2000]

Builds a scratch database (``sc_qbench_<random>`` on ``--database-url``, dropped
afterwards) with the platform's schema on whichever path the server gives
(TimescaleDB where it can be loaded, else plain PostgreSQL; ``--path`` forces
one), and beside it the naive design: one unpartitioned ``naive_readings``
table with the same primary key, no rollups, every aggregate from raw rows.

Data, identical in both: ``--devices`` wearables x 3 metrics at 1-minute
resolution for ``--days`` days, plus enough others (``--sparse-hours`` of
1-minute data each) to make a ``--community`` of 2,000 devices. It is bulk
loaded with ``INSERT ... SELECT generate_series`` (not through MQTT: see
bench/ingest.py for that), then the platform's rollups and ``latest`` are
computed the way a backfill does, and on TimescaleDB chunks older than the
compression horizon are compressed.

Queries, each run ``--repeat`` times on random devices, or as often as fits in
``--budget`` seconds but at least 5 times (p50 and p99 of the round trip from
Python, all rows fetched):

1. one device's hourly averages over 30 days (platform: ``readings_1h``);
2. the latest values of the whole community (platform: ``latest``);
3. one device's raw readings over one hour.

Then bytes per stored reading: tables with their indexes (and partitions or
chunks, after compression where it applies) over the rows they hold.
"""

from __future__ import annotations

import argparse
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
from core.storage import StoragePath
from store import schema
from store.rollups import rebuild_rollups

COMMUNITY = "bench"
METRICS = ("heart_rate", "spo2", "battery")

_NAIVE = """
CREATE TABLE naive_readings (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    seq         bigint,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
)
"""
# Deterministic values: a daily rhythm per device, so both designs hold the same rows.
_FILL = """
INSERT INTO {table} (device_id, metric, ts, value, seq, received_at)
SELECT d.id, m.metric, t.ts,
       m.base + 10 * sin(extract(epoch FROM t.ts) / 13751 + d.n) + (d.n %% 7),
       NULL, t.ts
  FROM (SELECT 'w' || lpad(n::text, 5, '0') AS id, n
          FROM generate_series(%(lo)s::integer, %(hi)s::integer) AS n) AS d,
       (VALUES ('heart_rate', 70.0), ('spo2', 95.0), ('battery', 60.0)) AS m(metric, base),
       generate_series(%(start)s::timestamptz, %(end)s::timestamptz - INTERVAL '1 minute',
                       INTERVAL '1 minute') AS t(ts)
"""
_LATEST_BACKFILL = """
INSERT INTO latest (device_id, metric, community_id, ts, value, received_at)
SELECT DISTINCT ON (r.device_id, r.metric)
       r.device_id, r.metric, d.community_id, r.ts, r.value, r.received_at
  FROM readings AS r JOIN devices AS d ON d.id = r.device_id
 ORDER BY r.device_id, r.metric, r.ts DESC
"""

QUERIES: dict[str, tuple[str, str]] = {
    "hourly avg, 1 device, 30 days": (
        "SELECT bucket, avg FROM readings_1h WHERE device_id = %(device)s"
        " AND metric = 'heart_rate' AND bucket >= %(month)s AND bucket < %(now)s ORDER BY bucket",
        "SELECT date_trunc('hour', ts, 'UTC') AS bucket, avg(value) FROM naive_readings"
        " WHERE device_id = %(device)s AND metric = 'heart_rate'"
        " AND ts >= %(month)s AND ts < %(now)s GROUP BY 1 ORDER BY 1",
    ),
    "latest values, whole community": (
        "SELECT device_id, metric, ts, value FROM latest WHERE community_id = %(community)s",
        "SELECT DISTINCT ON (device_id, metric) device_id, metric, ts, value"
        " FROM naive_readings WHERE device_id IN"
        " (SELECT id FROM devices WHERE community_id = %(community)s)"
        " ORDER BY device_id, metric, ts DESC",
    ),
    "raw 1-hour window, 1 device": (
        "SELECT ts, metric, value FROM readings WHERE device_id = %(device)s"
        " AND ts >= %(hour)s AND ts < %(hour)s + INTERVAL '1 hour' ORDER BY ts, metric",
        "SELECT ts, metric, value FROM naive_readings WHERE device_id = %(device)s"
        " AND ts >= %(hour)s AND ts < %(hour)s + INTERVAL '1 hour' ORDER BY ts, metric",
    ),
}


def _say(message: str) -> None:
    print(message, flush=True)


def _timed(what: str, step: Callable[[], object]) -> None:
    started = time.perf_counter()
    step()
    _say(f"  {what}: {time.perf_counter() - started:.1f}s")


def _timed_sql(
    conn: psycopg.Connection[Any], what: str, query: sql.Composed, params: Any = None
) -> None:
    _timed(what, lambda: conn.execute(query, params))


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _load(conn: psycopg.Connection[Any], args: argparse.Namespace, now: datetime) -> StoragePath:
    path = StoragePath(conn.execute("SELECT path FROM storage_config").fetchone()[0])  # type: ignore[index]
    dense_start = now - timedelta(days=args.days)
    sparse_start = now - timedelta(hours=args.sparse_hours)
    conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (COMMUNITY, COMMUNITY))
    conn.execute(
        "INSERT INTO devices (id, community_id, device_class)"
        " SELECT 'w' || lpad(n::text, 5, '0'), %s, 'wearable' FROM generate_series(0, %s) AS n",
        (COMMUNITY, args.community - 1),
    )
    if path is StoragePath.POSTGRESQL:
        _timed(
            "day partitions",
            lambda: conn.execute(
                "SELECT sc_ensure_day_partition(t, d::date)"
                " FROM unnest(ARRAY['readings']) AS t,"
                " generate_series(%s::date, %s::date, INTERVAL '1 day') AS d",
                (dense_start.date(), now.date()),
            ),
        )
    conn.execute(_NAIVE)
    parts = [
        (0, args.devices - 1, dense_start),
        (args.devices, args.community - 1, sparse_start),
    ]
    for table in ("readings", "naive_readings"):
        for lo, hi, start in parts:
            if lo > hi:
                continue
            query = sql.SQL(_FILL).format(table=sql.Identifier(table))
            params = {"lo": lo, "hi": hi, "start": start, "end": now}
            _timed_sql(conn, f"{table}: devices {lo}..{hi}", query, params)
    _timed("latest", lambda: conn.execute(_LATEST_BACKFILL))
    if path is StoragePath.POSTGRESQL:
        _timed("rollups", lambda: rebuild_rollups(conn, dense_start, now))
    else:
        refresh = sql.SQL("CALL refresh_continuous_aggregate({}, NULL, NULL)")
        for view in ("rollup_hourly", "rollup_daily"):
            _timed_sql(conn, view, refresh.format(sql.Literal(view)))
        _timed(
            "compression",
            lambda: conn.execute(
                "SELECT count(compress_chunk(c)) FROM show_chunks('readings',"
                " older_than => (SELECT compress_after FROM storage_config)) AS c"
            ),
        )
    _timed("analyze", lambda: conn.execute("ANALYZE"))
    return path


def _bytes_per_reading(conn: psycopg.Connection[Any], path: StoragePath) -> list[str]:
    def one(query: str) -> float:
        row = conn.execute(query).fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0

    rows = one("SELECT count(*) FROM readings")
    if path is StoragePath.TIMESCALEDB:
        raw = one("SELECT hypertable_size('readings')")
        rollups = one(
            "SELECT sum(hypertable_size(format('%I.%I', materialization_hypertable_schema,"
            " materialization_hypertable_name)::regclass))"
            " FROM timescaledb_information.continuous_aggregates"
        )
    else:
        raw = one(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'readings'::regclass"
        )
        rollups = one(
            "SELECT pg_total_relation_size('rollup_hourly')"
            " + pg_total_relation_size('rollup_daily')"
        )
    latest = one("SELECT pg_total_relation_size('latest')")
    naive = one("SELECT pg_total_relation_size('naive_readings')")
    naive_rows = one("SELECT count(*) FROM naive_readings")
    return [
        f"  platform raw readings: {raw / rows:6.1f} B/reading"
        f" ({rows:,.0f} rows, {raw / 2**20:,.0f} MiB)",
        f"  + rollups and latest:  {(raw + rollups + latest) / rows:6.1f} B/reading"
        f" (rollups {rollups / 2**20:,.0f} MiB, latest {latest / 2**20:,.1f} MiB)",
        f"  naive table:           {naive / naive_rows:6.1f} B/reading ({naive / 2**20:,.0f} MiB)",
    ]


def _measure(conn: psycopg.Connection[Any], args: argparse.Namespace, now: datetime) -> None:
    rng = random.Random(args.seed)
    dense = [f"w{n:05d}" for n in range(args.devices)]
    print(
        f"\n{'query':<32} {'design':<9} {'p50 ms':>9} {'p99 ms':>9} {'runs':>5} {'rows':>7}"
        "  naive/platform (p50)"
    )
    for name, (platform_sql, naive_sql) in QUERIES.items():
        medians: dict[str, float] = {}
        for design, query in (("platform", platform_sql), ("naive", naive_sql)):
            samples: list[float] = []
            rows = 0
            budget = time.monotonic() + args.budget
            # The naive design's slow queries stop at the time budget (at least 5 runs).
            while len(samples) < args.repeat and (len(samples) < 5 or time.monotonic() < budget):
                hour = now - timedelta(minutes=rng.randrange(60, args.days * 1440 - 60))
                params = {
                    "device": rng.choice(dense),
                    "community": COMMUNITY,
                    "now": now,
                    "month": (now - timedelta(days=30)).replace(minute=0),
                    "hour": hour.replace(second=0, microsecond=0),
                }
                started = time.perf_counter()
                rows = len(conn.execute(query.encode(), params).fetchall())
                samples.append((time.perf_counter() - started) * 1000)
            p50, p99 = statistics.median(samples), _percentile(samples, 0.99)
            medians[design] = p50
            ratio = f"{medians['naive'] / medians['platform']:.1f}x" if design == "naive" else ""
            print(
                f"{name:<32} {design:<9} {p50:9.2f} {p99:9.2f} {len(samples):5} {rows:7}  {ratio}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--days", type=int, default=30, help="days of 1-minute data (dense devices)"
    )
    parser.add_argument("--devices", type=int, default=100, help="devices with --days of data")
    parser.add_argument("--community", type=int, default=2000, help="devices in the community")
    parser.add_argument("--sparse-hours", type=int, default=6, help="hours of data of the others")
    parser.add_argument("--repeat", type=int, default=100, help="runs of each query")
    parser.add_argument(
        "--budget", type=float, default=30.0, help="seconds per query and design, at most"
    )
    parser.add_argument("--path", choices=[p.value for p in StoragePath], help="force a path")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.community < args.devices:
        parser.error("--community must be at least --devices")
    with scratch_database(args.database_url, "sc_qbench") as name:
        url = args.database_url.rsplit("/", 1)[0] + f"/{name}"
        if args.path:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} SET smartcommunity.storage = {}").format(
                        sql.Identifier(name), sql.Literal(args.path)
                    )
                )
        schema.upgrade(url)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        rows = args.devices * args.days * 1440 * 3 + (args.community - args.devices) * (
            args.sparse_hours * 60 * 3
        )
        _say(f"loading {rows:,} readings into each design ({name})")
        with psycopg.connect(url, autocommit=True) as conn:
            path = _load(conn, args, now)
            _say(f"storage path: {path.value}; {args.repeat} runs or {args.budget:.0f} s a query")
            _measure(conn, args, now)
            print("\nbytes per stored reading (tables with indexes):")
            print("\n".join(_bytes_per_reading(conn, path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
