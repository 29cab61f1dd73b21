"""The storage contract on both paths: plain PostgreSQL and TimescaleDB.

Every test taking ``store`` runs once per path. The TimescaleDB variant needs a
server that can load the extension; where it cannot, that variant is *skipped*
with the reason, i.e. reported as not run (never as passed).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from core.errors import ConfigurationError
from core.models import Reading
from core.storage import StoragePath
from ingest.batch import Accepted, Batch, WriteResult
from ingest.maintenance import maintain
from ingest.writer import BatchWriter
from store import schema
from store.layout import FORCE_SETTING, timescaledb_available
from store.rollups import rebuild_rollups, refresh_rollups
from tests.integration.support import one_row
from tests.servers import temporary_database

pytestmark = pytest.mark.integration

SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"
# The columns every consumer (API, Grafana, bench) may rely on, on both paths.
CONTRACT = {
    "readings_1h": [
        "device_id", "metric", "bucket", "count", "sum", "avg", "min", "max", "last", "last_ts",
    ],
    "readings_1d": [
        "device_id", "metric", "day", "time_zone", "bucket", "count", "sum", "avg", "min", "max",
        "last", "last_ts",
    ],
    "latest": ["device_id", "metric", "community_id", "ts", "value", "received_at"],
}  # fmt: skip


def server_has_timescaledb(url: str) -> bool:
    """The server can run the TimescaleDB path: available, preloaded, not Apache-only."""
    with psycopg.connect(url, autocommit=True) as conn:
        return timescaledb_available(conn)


@dataclass
class Store:
    """A migrated database on one storage path, written through the real ingest writer."""

    url: str
    path: StoragePath

    def conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def register(self, community: str, devices: list[str], time_zone: str = SHANGHAI) -> None:
        with self.conn() as conn:
            conn.execute(
                "INSERT INTO communities (id, name, time_zone) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (community, community, time_zone),
            )
            conn.cursor().executemany(
                "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'wearable')",
                [(d, community) for d in devices],
            )

    def write(self, readings: list[Reading]) -> WriteResult:
        """One batch, one message per reading, through ``ingest.writer.BatchWriter``."""
        batch = Batch(
            accepted=[
                Accepted(
                    device_id=r.device_id,
                    topic=f"community/x/wearable/{r.device_id}/telemetry",
                    payload=b"{}",
                    readings=[r],
                    device_time=r.ts,
                    received_at=r.received_at,
                )
                for r in readings
            ]
        )
        writer = BatchWriter(url=self.url, worker="test")
        try:
            return writer.write(batch)
        finally:
            writer.close()

    def refresh(self) -> None:
        """Bring the rollups up to date the way production does."""
        with self.conn() as conn:
            if self.path is StoragePath.POSTGRESQL:
                refresh_rollups(conn)
            else:
                for job in self.jobs(conn, "policy_refresh_continuous_aggregate"):
                    conn.execute("CALL run_job(%s)", (job,))

    def jobs(self, conn: psycopg.Connection[Any], proc: str) -> list[int]:
        rows = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s ORDER BY 1",
            (proc,),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn() as conn:
            return conn.execute(query.encode(), params).fetchall()


PATHS = [StoragePath.POSTGRESQL, StoragePath.TIMESCALEDB]


@contextmanager
def open_store(path: StoragePath, server_url: str) -> Iterator[Store]:
    """A fresh database migrated onto ``path``; skips (not run) where TimescaleDB is missing."""
    if path is StoragePath.TIMESCALEDB and not server_has_timescaledb(server_url):
        pytest.skip(
            "not run: this PostgreSQL server cannot load TimescaleDB (extension not available,"
            " not in shared_preload_libraries, or Apache-licensed only); the timescaledb variant"
            " did not run"
        )
    with temporary_database(server_url, prefix="sc_storage") as url:
        force(url, path)
        schema.upgrade(url)
        yield Store(url, path)


@pytest.fixture(params=PATHS, ids=str)
def store(request: pytest.FixtureRequest, database_server_url: str) -> Iterator[Store]:
    with open_store(request.param, database_server_url) as opened:
        yield opened


def force(url: str, path: StoragePath) -> None:
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(dbname), sql.Identifier(*FORCE_SETTING.split(".")),
                sql.Literal(path.value),
            )
        )  # fmt: skip


def reading(device: str, metric: str, ts: datetime, value: float) -> Reading:
    return Reading(device, metric, ts, value, None, datetime.now(UTC))


def hour_ago(n: float) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(hours=n)


# --- layout ---------------------------------------------------------------------------------


def test_layout_and_contract(store: Store) -> None:
    with store.conn() as conn:
        path = conn.execute("SELECT path FROM storage_config").fetchone()
        assert path == (store.path.value,)
        for relation, columns in CONTRACT.items():
            found = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (relation,),
            ).fetchall()
            assert [r[0] for r in found] == columns, relation
        if store.path is StoragePath.POSTGRESQL:
            kinds = dict(
                conn.execute(
                    "SELECT relname, relkind FROM pg_class"
                    " WHERE relname IN ('readings', 'device_events', 'readings_default')"
                ).fetchall()
            )
            assert kinds == {"readings": "p", "device_events": "p", "readings_default": "r"}
            today = datetime.now(UTC).date()
            for n in range(-1, 8):
                name = f"readings_p{today + timedelta(days=n):%Y%m%d}"
                assert conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() != (None,)
        else:
            hypertables = conn.execute(
                "SELECT hypertable_name, compression_enabled"
                " FROM timescaledb_information.hypertables ORDER BY 1"
            ).fetchall()
            assert hypertables == [("device_events", True), ("readings", True)]
            procs = conn.execute(
                # TimescaleDB's own jobs (telemetry, job history) belong to no hypertable.
                "SELECT proc_name, count(*) FROM timescaledb_information.jobs"
                " WHERE proc_name LIKE 'policy_%' AND hypertable_name IS NOT NULL"
                " GROUP BY 1 ORDER BY 1"
            ).fetchall()
            assert procs == [
                ("policy_compression", 2),
                ("policy_refresh_continuous_aggregate", 2),
                ("policy_retention", 4),
            ]


# --- rollups --------------------------------------------------------------------------------


def _expected(
    readings: list[Reading], key: Any
) -> dict[tuple[str, str, Any], tuple[int, float, float, float, float]]:
    groups: dict[tuple[str, str, Any], list[Reading]] = defaultdict(list)
    for r in readings:
        groups[(r.device_id, r.metric, key(r))].append(r)
    out = {}
    for k, rs in groups.items():
        values = [r.value for r in rs]
        last = max(rs, key=lambda r: r.ts).value
        out[k] = (len(rs), sum(values) / len(rs), min(values), max(values), last)
    return out


def _approx(
    got: dict[Any, tuple[Any, ...]], want: dict[Any, tuple[int, float, float, float, float]]
) -> None:
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        assert g[0] == w[0], k
        assert g[1:] == pytest.approx(w[1:], rel=1e-9), k


def test_rollups_match_aggregates_of_raw_rows(store: Store, unique_id: str) -> None:
    rng = random.Random(20261129)
    zones = {f"a{unique_id}": SHANGHAI, f"b{unique_id}": NEW_YORK}
    device_zone = {}
    for community, zone in zones.items():
        devices = [f"{community}-{n}" for n in range(2)]
        store.register(community, devices, zone)
        device_zone.update(dict.fromkeys(devices, zone))
    start = hour_ago(74)
    readings: dict[tuple[str, str, datetime], Reading] = {}
    for device in device_zone:
        for metric in ("heart_rate", "spo2"):
            ts = start + timedelta(seconds=rng.randrange(600))
            while ts < hour_ago(0):  # up to the current hour: the views' raw side
                readings[(device, metric, ts)] = reading(device, metric, ts, rng.uniform(40, 160))
                ts += timedelta(seconds=rng.randrange(60, 900))
    rows = list(readings.values())
    rng.shuffle(rows)  # out of order across and within batches
    batches = [rows[i : i + 97] for i in range(0, len(rows), 97)]
    written = sum(store.write(b).rows_written for b in batches)
    for again in rng.sample(batches, 3):  # redelivered batches must not count twice
        assert store.write(again).rows_written == 0
    assert written == len(rows)
    store.refresh()

    def hourly_key(r: Reading) -> datetime:
        return r.ts.replace(minute=0, second=0, microsecond=0)

    got = {
        (d, m, b): (c, avg, lo, hi, last)
        for d, m, b, c, avg, lo, hi, last in store.rows(
            "SELECT device_id, metric, bucket, count, avg, min, max, last FROM readings_1h"
            " WHERE device_id = ANY(%s)",
            list(device_zone),
        )
    }
    _approx(got, _expected(rows, hourly_key))

    # Daily: local days of each community. TimescaleDB's daily aggregate is in one
    # zone (storage_config.daily_time_zone); other zones are the API's to merge.
    daily_devices = [
        d for d, z in device_zone.items() if store.path is StoragePath.POSTGRESQL or z == SHANGHAI
    ]

    def daily_key(r: Reading) -> date:
        return r.ts.astimezone(ZoneInfo(device_zone[r.device_id])).date()

    got = {
        (d, m, day): (c, avg, lo, hi, last)
        for d, m, day, c, avg, lo, hi, last in store.rows(
            "SELECT device_id, metric, day, count, avg, min, max, last FROM readings_1d"
            " WHERE device_id = ANY(%s)",
            daily_devices,
        )
    }
    _approx(got, _expected([r for r in rows if r.device_id in daily_devices], daily_key))


def test_rows_written_around_the_writer_reach_the_rollups_by_one_call(
    store: Store, unique_id: str
) -> None:
    """A bulk load straight into ``readings`` (no writer to note its hours): the same
    ``rebuild_rollups`` call brings the rollups up to date on either path."""
    device = f"{unique_id}-bulk"
    store.register(f"c{unique_id}", [device])
    hour = hour_ago(5).replace(minute=0)
    store.write([reading(device, "heart_rate", hour + timedelta(minutes=1), 60.0)])
    store.refresh()  # the hour is materialised: the views read it from the rollups

    def hourly() -> list[tuple[Any, ...]]:
        return store.rows(
            "SELECT count, max FROM readings_1h WHERE device_id = %s AND bucket = %s",
            device,
            hour,
        )

    assert hourly() == [(1, 60.0)]
    with store.conn() as conn:
        conn.cursor().executemany(
            "INSERT INTO readings (device_id, metric, ts, value, received_at)"
            " VALUES (%s, 'heart_rate', %s, %s, now())",
            [(device, hour + timedelta(minutes=m), 60.0 + m) for m in (10, 20)],
        )
    assert hourly() == [(1, 60.0)], "the views saw the bulk rows without a rebuild"
    with store.conn() as conn:
        conn.autocommit = False
        conn.execute("SELECT 1")
        with pytest.raises(ConfigurationError, match="outside a transaction"):
            rebuild_rollups(conn, hour, hour + timedelta(hours=1))
        conn.rollback()
        assert rebuild_rollups(conn, hour, hour + timedelta(hours=1)) >= 1
        assert conn.autocommit is False  # handed back as it came
    assert hourly() == [(3, 80.0)]


def test_day_boundaries_follow_the_community_time_zone(store: Store, unique_id: str) -> None:
    device = f"w{unique_id}"
    store.register(f"c{unique_id}", [device], SHANGHAI)
    beijing = ZoneInfo(SHANGHAI)
    day = (datetime.now(beijing) - timedelta(days=3)).date()
    at = [
        (datetime(day.year, day.month, day.day, 0, 10, tzinfo=beijing), 30.0),
        (datetime(day.year, day.month, day.day, 23, 30, tzinfo=beijing), 10.0),
        (datetime(day.year, day.month, day.day, 23, 30, tzinfo=beijing) + timedelta(hours=1), 20.0),
    ]
    # 23:30 and 00:30 Beijing time are the same UTC day (15:30Z and 16:30Z)...
    assert at[1][0].astimezone(UTC).date() == at[2][0].astimezone(UTC).date()
    store.write([reading(device, "heart_rate", ts, v) for ts, v in at])
    store.refresh()
    got = store.rows(
        "SELECT day, bucket, count, last, time_zone FROM readings_1d WHERE device_id = %s"
        " ORDER BY day",
        device,
    )
    # ...but different Beijing days.
    assert got == [
        (day, datetime(day.year, day.month, day.day, tzinfo=beijing), 2, 10.0, SHANGHAI),
        (day + timedelta(days=1), at[2][0].replace(hour=0, minute=0), 1, 20.0, SHANGHAI),
    ]


def test_late_and_out_of_order_readings(store: Store, unique_id: str) -> None:
    device = f"w{unique_id}"
    store.register(f"c{unique_id}", [device])
    recent = hour_ago(1)
    assert store.write([reading(device, "spo2", recent, 95.0)]).rows_written == 1
    # Newer first, then older: "latest" is by device time, not arrival.
    store.write([reading(device, "spo2", recent + timedelta(minutes=30), 96.0)])
    store.write([reading(device, "spo2", recent + timedelta(minutes=10), 91.0)])
    assert store.rows("SELECT ts, value FROM latest WHERE device_id = %s", device) == [
        (recent + timedelta(minutes=30), 96.0)
    ]
    # Ten days back: past the compression horizon (7 days), compressed on TimescaleDB.
    old = hour_ago(240).replace(minute=5)
    store.write([reading(device, "spo2", old, 97.0)])
    store.refresh()
    if store.path is StoragePath.TIMESCALEDB:
        with store.conn() as conn:
            compressed = one_row(
                conn,
                "SELECT count(compress_chunk(c)) FROM show_chunks('readings',"
                " older_than => INTERVAL '7 days') AS c",
            )
            assert compressed[0] >= 1
    late = old + timedelta(minutes=20)
    assert store.write([reading(device, "spo2", late, 99.0)]).rows_written == 1
    assert store.write([reading(device, "spo2", late, 99.0)]).rows_written == 0  # again
    store.refresh()
    assert store.rows(
        "SELECT count, min, max, last FROM readings_1h WHERE device_id = %s AND bucket = %s",
        device,
        old.replace(minute=0),
    ) == [(2, 97.0, 99.0, 99.0)]
    assert store.rows("SELECT ts, value FROM latest WHERE device_id = %s", device) == [
        (recent + timedelta(minutes=30), 96.0)
    ]


# --- retention ------------------------------------------------------------------------------


def test_retention_drops_only_what_it_should(store: Store, unique_id: str) -> None:
    device = f"w{unique_id}"
    store.register(f"c{unique_id}", [device])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ages = {1200: 1.0, 500: 2.0, 401: 3.0, 399: 4.0, 2: 5.0}  # days old -> value
    store.write(
        [reading(device, "heart_rate", now - timedelta(days=a), v) for a, v in ages.items()]
    )
    with store.conn() as conn:
        if store.path is StoragePath.POSTGRESQL:
            refresh_rollups(conn)
            maintain(conn)
        else:
            # Rows this old are outside the policies' refresh window (it must stay
            # inside raw retention); materialise them once, as a backfill would.
            for view in ("rollup_hourly", "rollup_daily"):
                conn.execute(
                    sql.SQL("CALL refresh_continuous_aggregate({}, NULL, NULL)").format(
                        sql.Literal(view)
                    )
                )
            for job in store.jobs(conn, "policy_retention"):
                conn.execute("CALL run_job(%s)", (job,))
    raw = store.rows("SELECT value FROM readings WHERE device_id = %s ORDER BY ts", device)
    assert raw == [(4.0,), (5.0,)]  # 400 days of raw rows
    store.refresh()  # a refresh after retention must not empty the rollups of dropped rows
    hourly = store.rows("SELECT last FROM readings_1h WHERE device_id = %s ORDER BY 1", device)
    assert hourly == [(2.0,), (3.0,), (4.0,), (5.0,)]  # 1,100 days of hourly rollups
    daily = store.rows("SELECT last FROM readings_1d WHERE device_id = %s ORDER BY 1", device)
    assert daily == [(1.0,), (2.0,), (3.0,), (4.0,), (5.0,)]  # 3,660 days of daily ones


# --- plain PostgreSQL partitions --------------------------------------------------------------


@pytest.fixture
def plain(database_server_url: str) -> Iterator[Store]:
    with open_store(StoragePath.POSTGRESQL, database_server_url) as opened:
        yield opened


def test_partitions_take_future_and_late_days(plain: Store, unique_id: str) -> None:
    device = f"w{unique_id}"
    plain.register(f"c{unique_id}", [device])
    future = datetime.now(UTC) + timedelta(hours=23, minutes=59)
    late = datetime.now(UTC) - timedelta(days=30)
    plain.write([reading(device, "battery", future, 80.0), reading(device, "battery", late, 70.0)])
    where = "SELECT tableoid::regclass::text FROM readings WHERE device_id = %s ORDER BY ts"
    assert plain.rows(where, device) == [
        ("readings_default",),  # no partition for a day 30 days back: the safety net
        (f"readings_p{future.date():%Y%m%d}",),
    ]
    with plain.conn() as conn:
        report = maintain(conn)
    assert f"readings_p{late.date():%Y%m%d}" in report.created
    assert not report.errors
    assert plain.rows(where, device) == [
        (f"readings_p{late.date():%Y%m%d}",),
        (f"readings_p{future.date():%Y%m%d}",),
    ]
    assert plain.rows("SELECT count(*) FROM readings_default") == [(0,)]


# --- migration of an existing database ------------------------------------------------------


@pytest.mark.parametrize("path", [StoragePath.POSTGRESQL, StoragePath.TIMESCALEDB], ids=str)
def test_upgrade_carries_existing_rows_over(
    database_server_url: str, path: StoragePath, unique_id: str
) -> None:
    if path is StoragePath.TIMESCALEDB and not server_has_timescaledb(database_server_url):
        pytest.skip("not run: this PostgreSQL server cannot load TimescaleDB")
    first = schema.migrations()[0]
    old = hour_ago(24 * 20).replace(minute=15)
    with temporary_database(database_server_url, prefix="sc_storage") as url:
        force(url, path)
        with psycopg.connect(url, autocommit=True) as conn:  # a database at version 1
            conn.execute(first.sql.encode())
            conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'initial')")
            conn.execute("INSERT INTO communities (id, name) VALUES ('c', 'c')")
            conn.execute(
                "INSERT INTO devices (id, community_id, device_class) VALUES ('d', 'c', 'x')"
            )
            conn.execute(
                "INSERT INTO readings (device_id, metric, ts, value, received_at)"
                " VALUES ('d', 'spo2', %(t)s, 90, %(t)s), ('d', 'spo2', %(u)s, 94, %(u)s),"
                " ('d', 'spo2', %(n)s, 97, %(n)s)",
                {"t": old, "u": old + timedelta(minutes=10), "n": hour_ago(2)},
            )
            conn.execute(
                "INSERT INTO device_events (device_id, ts, event, received_at)"
                " VALUES ('d', %s, 'sos_pressed', now())",
                (old,),
            )
        applied = schema.upgrade(url)
        assert [m.version for m in applied][:1] == [2]
        assert schema.upgrade(url) == []
        store = Store(url, path)
        assert store.rows("SELECT count(*) FROM readings") == [(3,)]
        assert store.rows("SELECT count(*) FROM device_events") == [(1,)]
        assert store.rows("SELECT value FROM latest WHERE device_id = 'd'") == [(97.0,)]
        assert store.rows(
            "SELECT count, avg FROM readings_1h WHERE device_id = 'd' AND bucket = %s",
            old.replace(minute=0),
        ) == [(2, 92.0)]
