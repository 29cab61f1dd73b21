"""What each benchmark run is measured against: the workload, a scratch database with
its devices registered, the wait for its rows to be committed, and the checks.

- a fresh database per run (``sc_bench_<random>``, dropped afterwards) with the
  platform's schema and the devices registered, and the reference's table;
- the end of a run seen by an index probe for the last message's row, then
  confirmed with ``count(*)``; database CPU as the ingester's backends' time;
- what the rule engine made of a run, and the API's live alert stream as it comes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
import psutil
import psycopg

if TYPE_CHECKING:
    from bench.ingesters import Child

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent
# The reference writes its own table of the shape its README gives, with the same
# natural key as ``readings`` so that both pay for an index.
REFERENCE_TABLE = "peer_readings"
REFERENCE_DDL = (
    f"CREATE TABLE {REFERENCE_TABLE} (time timestamptz NOT NULL, device_id text NOT NULL,"
    " metric text NOT NULL, value float8, PRIMARY KEY (device_id, metric, time))"
)
# The reference prints nothing: it is ready once a probe message's row shows up.
PROBE_DEVICE = "probe"
COMMUNITY = "bench"
DEVICE_CLASS = "wearable"
METRICS_PER_MESSAGE = 3
# The last metric of each message; its row is what the end-of-run probe looks for.
LAST_METRIC = "battery"
# Probe period for the last row: a PK lookup costs the server microseconds, so
# this is the timing resolution, not a load.
PROBE_INTERVAL_S = 0.02
# A full count(*) is not free on a 2-core machine: only while the probe has
# already seen the last row and the count fell short.
COUNT_INTERVAL_S = 0.25
# How often progress (pg_stat_user_tables, cheap but a second late) is printed
# and checked for a stall.
PROGRESS_INTERVAL_S = 2.0
# A run whose table has not grown for this long has failed (its log tail is shown).
STALL_TIMEOUT_S = 60.0
# Process start, MQTT connect and SUBACK each come well within this.
START_TIMEOUT_S = 60.0
# The bench's own database sessions, left out of the ingester's database CPU.
BENCH_APP = "sc-bench"


class BenchError(RuntimeError):
    """A run could not be completed or measured; the message says why."""


@dataclass(frozen=True, slots=True)
class Workload:
    messages: int
    devices: int
    base_ms: int  # ts of message i is base_ms + i: unique per (device, ts)
    # The alert storm: battery uniform over 5-100 %, so with the old rule
    # pack nearly every reading crossed a battery threshold one way or the other.
    storm: bool = False

    def device_id(self, index: int) -> str:
        return f"w{index:05d}"

    def topic(self, index: int) -> str:
        return f"community/{COMMUNITY}/{DEVICE_CLASS}/{self.device_id(index)}/telemetry"

    def payload(self, i: int) -> bytes:
        return orjson.dumps(
            {
                # ISO 8601, as the reference ingester expects (it reads no epoch ms).
                "ts": (EPOCH + timedelta(milliseconds=self.base_ms + i)).isoformat(
                    timespec="milliseconds"
                ),
                "seq": i,
                # Healthy values: this measures ingest with the rule engine
                # evaluating every reading; what raising alerts costs is
                # bench/alerts.py's business.
                "metrics": {
                    "heart_rate": 55 + i % 60,
                    "spo2": 92.0 + (i % 80) / 10,
                    LAST_METRIC: 5 + (i * 7919) % 96 if self.storm else 30 + i % 71,
                },
            }
        )

    @property
    def rows(self) -> int:
        return self.messages * METRICS_PER_MESSAGE

    def last_row_key(self) -> tuple[str, str, datetime]:
        """(device_id, metric, ts) of the last message's last row."""
        last = self.messages - 1
        ts = EPOCH + timedelta(milliseconds=self.base_ms + last)
        return self.device_id(last % self.devices), LAST_METRIC, ts


# -- database -------------------------------------------------------------------


def _with_dbname(server_url: str, dbname: str) -> str:
    return urlsplit(server_url)._replace(path=f"/{dbname}").geturl()


@contextlib.contextmanager
def fresh_database(server_url: str, workload: Workload) -> Iterator[str]:
    """A new database with the platform's schema and the devices registered; dropped after."""
    from store import schema

    name = f"sc_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(server_url, name)
    try:
        schema.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (COMMUNITY, "bench"))
            conn.execute(
                "INSERT INTO devices (id, community_id, device_class)"
                " SELECT 'w' || lpad(i::text, 5, '0'), %s, %s FROM generate_series(0, %s) AS i",
                (COMMUNITY, DEVICE_CLASS, workload.devices - 1),
            )
            conn.execute(REFERENCE_DDL)
            conn.execute("VACUUM ANALYZE devices")
            # Start each run without the previous run's dirty pages to write.
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute("CHECKPOINT")
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def watch_until_committed(
    conn: psycopg.Connection[tuple[Any, ...]],
    workload: Workload,
    child: Child,
    *,
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
    kind: str = "platform",
) -> tuple[float, int]:
    """Wait until all rows are committed; return (monotonic time seen, final count).

    ``check`` is called on each round and may raise to end the wait (a failed publisher).
    """
    table, ts_column = ingester_table(kind)
    count_sql = f"SELECT count(*) FROM {table} WHERE device_id <> '{PROBE_DEVICE}'"
    probe_sql = (
        f"SELECT count(*) FROM {table} WHERE device_id = %s AND metric = %s AND {ts_column} = %s"
    )
    device_id, metric, ts = workload.last_row_key()
    expected = workload.rows
    start = time.monotonic()
    hard_deadline = start + timeout_s
    counting = False
    last_total, last_growth = -1, start
    next_progress = start + PROGRESS_INTERVAL_S
    while True:
        now = time.monotonic()
        if counting:
            count = scalar(conn, count_sql)
            seen = time.monotonic()
            if count >= expected:
                return seen, count
        elif scalar(conn, probe_sql, (device_id, metric, ts)):
            seen = time.monotonic()
            count = scalar(conn, count_sql)
            if count >= expected:
                return seen, count
            print(
                f"  last row committed with {count}/{expected} rows: counting on",
                file=sys.stderr,
            )
            counting = True
        if now >= next_progress:
            next_progress = now + PROGRESS_INTERVAL_S
            total = scalar(
                conn,
                # The platform's readings are partitioned: count the partitions too.
                "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables"
                " WHERE (relname = %s OR relname LIKE %s) AND schemaname NOT LIKE 'pg_temp%%'",
                (table, f"{table}\\_%"),
            )
            print(f"  {now - start:6.1f}s  ~{total} rows", file=sys.stderr)
            if total != last_total:
                last_total, last_growth = total, now
        child.check_alive()
        check()
        if now - last_growth > STALL_TIMEOUT_S:
            raise BenchError(f"no new rows for {STALL_TIMEOUT_S:.0f} s\n{child.tail()}")
        if now > hard_deadline:
            raise BenchError(f"not done after {timeout_s:.0f} s\n{child.tail()}")
        time.sleep(COUNT_INTERVAL_S if counting else PROBE_INTERVAL_S)


def backend_cpu(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[int, float] | None:
    """CPU seconds so far of each client backend on this database but the bench's own;
    None when the server's processes cannot be read (not on this machine)."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND application_name <> %s",
        (BENCH_APP,),
    ).fetchall()
    found = {}
    for (pid,) in rows:
        try:
            times = psutil.Process(int(pid)).cpu_times()
        except psutil.Error:
            return None
        found[int(pid)] = times.user + times.system
    return found


def cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    if before is None or after is None:
        return None
    # A backend that connected within the window started from zero.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def scalar(conn: psycopg.Connection[tuple[Any, ...]], sql: str, params: Sequence[Any] = ()) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def ingester_table(kind: str) -> tuple[str, str]:
    """The table an ingester writes and its device-time column."""
    return (REFERENCE_TABLE, "time") if kind == "reference" else ("readings", "ts")


def verify(url: str, workload: Workload, kind: str) -> tuple[bool, list[str]]:
    """Exactly 3 rows per message, every seq, nothing dead-lettered."""
    if kind == "reference":  # no seq column: the key makes the count exact
        with psycopg.connect(url, autocommit=True) as conn:
            rows = scalar(
                conn,
                f"SELECT count(*) FROM {REFERENCE_TABLE} WHERE device_id <> %s",
                (PROBE_DEVICE,),
            )
        ok = rows == workload.rows
        return ok, [f"{kind}: rows {rows} (expected {workload.rows}): {'OK' if ok else 'FAILED'}"]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = scalar(conn, "SELECT count(*) FROM readings")
        seqs = scalar(conn, "SELECT count(DISTINCT seq) FROM readings")
        dead = scalar(conn, "SELECT count(*) FROM dead_letters")
    ok = rows == workload.rows and seqs == workload.messages and dead == 0
    checks = [
        f"{kind}: rows {rows} (expected {workload.rows}), distinct seq {seqs} "
        f"(expected {workload.messages}), dead letters {dead}: {'OK' if ok else 'FAILED'}"
    ]
    return ok, checks


def alert_summary(url: str) -> str:
    """What the rule engine made of the run: alerts per rule, and the most per subject."""
    with psycopg.connect(url, autocommit=True) as conn:
        per_rule = conn.execute(
            "SELECT rule_id, count(*), max(occurrences) FROM alerts GROUP BY rule_id ORDER BY 1"
        ).fetchall()
        worst = scalar(
            conn,
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM alerts"
            " GROUP BY rule_id, subject) AS s",
        )
    rules = ", ".join(f"{r} {n} (max occurrences {o})" for r, n, o in per_rule) or "none"
    return f"platform alerts: {rules}; at most {worst} alert(s) per (rule, subject)"


def read_alert_stream(
    base: str,
    token: str,
    found: list[tuple[float, dict[str, Any]]],
    ready: threading.Event,
    stop: threading.Event | None = None,
) -> None:
    """The API's live alert stream into ``found`` as (arrival time, alert); ``ready`` is
    set once it is open. Returns when ``stop`` is set (checked at each line) or the
    stream ends."""
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(timeout=None) as client,
        client.stream("GET", f"{base}/api/v1/alerts/stream", headers=headers) as response,
    ):
        ready.set()
        for line in response.iter_lines():
            if line.startswith("data: "):
                found.append((time.time(), json.loads(line[6:])))
            if stop is not None and stop.is_set():
                return
