"""``latest`` and ``last_seen`` as the batch writer keeps them, on a real PostgreSQL.

The writer moves ``latest`` with a plain UPDATE, and upserts each key's newest row
only when that UPDATE moved fewer rows than the batch holds: a new key, a late
row, a key twice in one batch. These cases take each way; what they keep must be
the same whichever ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from core.clock import CLOCK_TOLERANCE
from core.models import DeviceEvent, Reading
from ingest.batch import Accepted, Batch
from ingest.writer import BatchWriter
from store import schema

pytestmark = pytest.mark.integration


@pytest.fixture
def db(fresh_database_url: str, unique_id: str) -> Iterator[tuple[str, BatchWriter]]:
    schema.upgrade(fresh_database_url)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (unique_id, unique_id))
        conn.cursor().executemany(
            "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'wearable')",
            [(d, unique_id) for d in ("a", "b")],
        )
    writer = BatchWriter(url=fresh_database_url, worker="t")
    try:
        yield fresh_database_url, writer
    finally:
        writer.close()


def _message(device: str, values: list[tuple[str, datetime, float]], seq: int | None) -> Accepted:
    received = datetime.now(UTC)
    readings = [Reading(device, m, ts, v, seq, received) for m, ts, v in values]
    return Accepted(
        device_id=device,
        topic=f"community/x/wearable/{device}/telemetry",
        payload=b"{}",
        readings=readings,
        device_time=max(ts for _, ts, _ in values),
        received_at=received,
        seq=seq,
    )


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def test_latest_is_the_newest_whatever_the_batch_holds(db: tuple[str, BatchWriter]) -> None:
    url, writer = db
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    # First batch: every key new (the upsert).
    writer.write(Batch([_message("a", [("spo2", t0, 95.0)], 1)]))
    # One device twice (a backlog), and a metric latest has not seen yet.
    batch = Batch(
        [
            _message("a", [("spo2", t0 + timedelta(minutes=1), 96.0)], 2),
            _message("a", [("spo2", t0 + timedelta(minutes=2), 97.0)], 3),
            _message("a", [("heart_rate", t0 + timedelta(minutes=1), 70.0)], 4),
        ]
    )
    assert writer.write(batch).rows_written == 3
    # A SenML-like message (no seq) naming one metric twice; its keys are new.
    writer.write(
        Batch(
            [
                _message(
                    "b",
                    [("spo2", t0 + timedelta(minutes=5), 91.0), ("spo2", t0, 90.0)],
                    None,
                )
            ]
        )
    )
    # Late: older than what latest holds, in an otherwise fresh batch.
    writer.write(
        Batch(
            [
                _message("a", [("spo2", t0 + timedelta(seconds=30), 80.0)], 5),
                _message("b", [("heart_rate", t0 + timedelta(minutes=6), 60.0)], 6),
            ]
        )
    )
    assert _rows(url, "SELECT device_id, metric, ts, value FROM latest ORDER BY 1, 2") == [
        ("a", "heart_rate", t0 + timedelta(minutes=1), 70.0),
        ("a", "spo2", t0 + timedelta(minutes=2), 97.0),
        ("b", "heart_rate", t0 + timedelta(minutes=6), 60.0),
        ("b", "spo2", t0 + timedelta(minutes=5), 91.0),
    ]
    assert _rows(url, "SELECT id, last_seen FROM devices ORDER BY 1") == [
        ("a", t0 + timedelta(minutes=2)),
        ("b", t0 + timedelta(minutes=6)),
    ]
    assert _rows(url, "SELECT count(*) FROM readings") == [(8,)]


def test_a_fast_clock_and_an_event_move_only_as_far_as_receipt(
    db: tuple[str, BatchWriter],
) -> None:
    url, writer = db
    ahead = datetime.now(UTC) + timedelta(hours=3)
    message = _message("a", [("spo2", ahead, 95.0)], 1)
    writer.write(Batch([message]))
    capped = message.received_at + CLOCK_TOLERANCE if message.received_at else None
    assert _rows(url, "SELECT ts FROM latest") == [(capped,)]
    assert _rows(url, "SELECT last_seen FROM devices WHERE id = 'a'") == [(capped,)]
    # An event alone (no readings) moves last_seen too, and never backwards.
    received = datetime.now(UTC) + timedelta(seconds=10)
    later = received - timedelta(seconds=1)
    event = DeviceEvent("b", "fall", later, {}, 7, received)
    writer.write(
        Batch(
            [
                Accepted(
                    device_id="b",
                    topic="community/x/wearable/b/event",
                    payload=b"{}",
                    event=event,
                    device_time=later,
                    received_at=received,
                    seq=7,
                ),
                _message("a", [("spo2", ahead - timedelta(hours=4), 94.0)], 2),
            ]
        )
    )
    assert _rows(url, "SELECT id, last_seen FROM devices ORDER BY 1") == [
        ("a", capped),
        ("b", later),
    ]
    assert _rows(url, "SELECT ts FROM latest") == [(capped,)]
