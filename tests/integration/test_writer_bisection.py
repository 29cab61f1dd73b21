"""The batch writer on a real PostgreSQL: refusals are bisected, outages are not.

A batch the database refuses for a reason nobody foresaw is split until the
messages at fault stand alone; they become ``database_refused`` dead letters
with the error text and the rest commit. A database that goes away is an
outage: ``ServiceUnavailable``, no dead letter, and the same batch commits
once it is back.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.errors import ServiceUnavailable
from core.models import DeviceEvent, Reading
from ingest.batch import Accepted, Batch, DeadLetter
from ingest.writer import BatchWriter
from store import schema
from tests.integration.support import add_community, wait_for

pytestmark = pytest.mark.integration


def _setup(url: str, community: str, device: str) -> None:
    schema.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        add_community(conn, community)
        conn.execute(
            "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'wearable')",
            (device, community),
        )


def _reading(device: str, i: int, now: datetime, *, seq: int | None = None) -> Accepted:
    ts = now - timedelta(seconds=i)
    row = Reading(device, "heart_rate", ts, 60.0 + i % 30, i if seq is None else seq, now)
    return Accepted(
        device_id=device,
        topic=f"community/c/wearable/{device}/telemetry",
        payload=f"valid {i}".encode(),
        readings=[row],
        device_time=ts,
        received_at=now,
        seq=row.seq,
    )


def _rows(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def test_a_batch_refused_for_unforeseen_reasons_is_bisected(
    fresh_database_url: str, unique_id: str
) -> None:
    device = f"d{unique_id}"
    _setup(fresh_database_url, f"c{unique_id}", device)
    now = datetime.now(UTC)
    valid = [_reading(device, i, now) for i in range(60)]
    # Each passes Python's types yet the database (or the driver on the way) refuses it;
    # decode would stop all three today, the writer must not rely on that.
    past_bigint = _reading(device, 1000, now, seq=2**63)
    past_bigint.payload = b"seq past bigint"
    nul_in_jsonb = Accepted(
        device_id=device,
        topic=f"community/c/wearable/{device}/event",
        payload=b"NUL in jsonb",
        event=DeviceEvent(device, "sos_pressed", now, {"note": "a\x00b"}, 1, now),
        device_time=now,
        received_at=now,
    )
    nul_in_text = _reading(device, 1001, now)
    nul_in_text.readings = [nul_in_text.readings[0]._replace(metric="heart\x00rate")]
    nul_in_text.payload = b"NUL in text"
    hostile = [past_bigint, nul_in_jsonb, nul_in_text]
    accepted = [*valid[:20], hostile[0], *valid[20:40], hostile[1], *valid[40:], hostile[2]]
    already_dead = DeadLetter("community/c/x", b"x" * 100_000, "bad_json", "not JSON", now)

    writer = BatchWriter(url=fresh_database_url, worker="t", dead_payload_bytes=1024)
    try:
        result = writer.write(Batch(accepted=accepted, dead_letters=[already_dead]))
    finally:
        writer.close()

    assert result.rows_written == len(valid)
    refused = {d.payload: d for d in result.dead_letters if d.reason == "database_refused"}
    assert set(refused) == {h.payload for h in hostile}
    stored = _rows(fresh_database_url, "SELECT seq FROM readings WHERE device_id = %s", device)
    assert sorted(int(str(s)) for (s,) in stored) == list(range(60))
    letters = _rows(
        fresh_database_url,
        "SELECT payload, reason, detail, payload_size, octet_length(payload) FROM dead_letters",
    )
    by_payload = {bytes(p): (r, d, size, length) for p, r, d, size, length in letters}  # type: ignore[call-overload]
    for payload in refused:
        reason, detail, size, _ = by_payload[payload]
        assert reason == "database_refused"
        assert detail, "the database's error text is kept"
    # Bounded: the 100 kB payload is kept truncated, its size beside it.
    _, _, size, length = by_payload[b"x" * 1024]
    assert (size, length) == (100_000, 1024)


_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
)
_TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"


def test_an_outage_is_not_a_refusal(fresh_database_url: str, unique_id: str) -> None:
    device = f"d{unique_id}"
    _setup(fresh_database_url, f"c{unique_id}", device)
    now = datetime.now(UTC)
    batch = Batch(accepted=[_reading(device, i, now) for i in range(10)])
    name = f"writer-{unique_id}"
    writer = BatchWriter(url=f"{fresh_database_url}?application_name={name}", worker="t")
    failures: list[BaseException] = []

    def write() -> None:
        try:
            writer.write(batch)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            failures.append(exc)

    try:
        with writer.connection() as conn:
            first_pid = conn.info.backend_pid
        # The batch is under way (it waits on the lock) when the server ends the
        # writer's session: what a restart or a network cut mid-transaction looks like.
        with psycopg.connect(fresh_database_url) as locker:
            locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            writing = threading.Thread(target=write, name=f"write-{unique_id}")
            writing.start()
            wait_for(
                lambda: _rows(fresh_database_url, _WAITING, name) != [(0,)],
                30,
                "the writer's batch waiting on the lock",
            )
            _rows(fresh_database_url, _TERMINATE, name)
            writing.join(30)
        assert len(failures) == 1
        assert isinstance(failures[0], ServiceUnavailable)
        assert _rows(fresh_database_url, "SELECT count(*) FROM dead_letters") == [(0,)]
        assert _rows(fresh_database_url, "SELECT count(*) FROM readings") == [(0,)]
        result = writer.write(batch)  # the pool's new connection: the same batch, whole
        with writer.connection() as conn:
            assert conn.info.backend_pid != first_pid
    finally:
        writer.close()
    assert result.rows_written == 10
    assert result.dead_letters == []
    assert _rows(fresh_database_url, "SELECT count(*) FROM dead_letters") == [(0,)]
