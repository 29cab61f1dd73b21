"""The batch writer against another writer of the same device rows, on a real PostgreSQL.

Two transactions that update the same device rows in opposite orders deadlock;
the server then rolls one back. When that one is a batch of readings, the batch
must be written again at once: nothing is wrong with the data or the link.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from core.models import DeviceStatus
from ingest.batch import Accepted, Batch, WriteResult
from ingest.writer import BatchWriter
from store import schema

pytestmark = pytest.mark.integration


def _waiting_on_a_lock(url: str, application_name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND application_name = %s",
            (application_name,),
        ).fetchone()
    return row is not None and int(row[0]) > 0


def test_a_batch_that_loses_a_deadlock_is_written_again(
    fresh_database_url: str, unique_id: str
) -> None:
    schema.upgrade(fresh_database_url)
    first, second = f"{unique_id}-a", f"{unique_id}-b"
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (unique_id, unique_id))
        for device in (first, second):
            conn.execute(
                "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'wearable')",
                (device, unique_id),
            )
    now = datetime.now(UTC)
    batch = Batch(
        accepted=[
            Accepted(
                device_id=device,
                topic=f"community/{unique_id}/wearable/{device}/status",
                payload=b"online",
                status=DeviceStatus(device_id=device, online=True, ts=now, received_at=now),
            )
            for device in (first, second)
        ]
    )
    # The writer's own session finds the deadlock (its deadlock_timeout is the
    # default 1 s, the other's 30 s), so the writer is the one rolled back.
    writer_name = f"writer-{unique_id}"
    writer = BatchWriter(url=f"{fresh_database_url}?application_name={writer_name}", worker="t")
    outcome: list[WriteResult | BaseException] = []

    def write() -> None:
        try:
            outcome.append(writer.write(batch))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    other = psycopg.connect(fresh_database_url)
    try:
        other.execute("SET deadlock_timeout = '30s'")
        other.execute("UPDATE devices SET name = 'held' WHERE id = %s", (second,))
        thread = threading.Thread(target=write, name="writer")
        thread.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(fresh_database_url, writer_name):
            assert time.monotonic() < deadline, "the writer never waited for the held row"
            time.sleep(0.05)
        # The writer holds the first row and waits for the second; this closes the circle.
        other.execute("UPDATE devices SET name = 'held' WHERE id = %s", (first,))
        other.commit()
        thread.join(20)
    finally:
        other.close()
        writer.close()
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], WriteResult), f"the writer gave up: {outcome[0]!r}"
    with psycopg.connect(fresh_database_url) as conn:
        rows = conn.execute(
            "SELECT id, name, online, status_at FROM devices WHERE community_id = %s ORDER BY id",
            (unique_id,),
        ).fetchall()
    assert rows == [(first, "held", True, now), (second, "held", True, now)]
