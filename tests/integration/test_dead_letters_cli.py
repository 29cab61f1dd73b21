"""``smartcommunity dead-letters list|replay`` on a real PostgreSQL: after a fix
(here, the device gets registered) selected dead letters go through the
pipeline's path again, and each replay's result is recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from smartcommunity.cli import main
from tests.integration.support import one_row, register

pytestmark = pytest.mark.integration


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().out


def test_replay_after_a_fix_stores_once_and_records_each_result(
    cli_database_url: str,
    unique_id: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    community, late, known = f"c{unique_id}", f"late{unique_id}", f"known{unique_id}"
    register(cli_database_url, community, [known])
    now = datetime.now(UTC) - timedelta(minutes=5)
    now_ms = int(now.timestamp() * 1000)
    letters = [
        # From a device not registered yet: the fix is to register it.
        (late, _payload(now_ms, 1), "unknown_device", None),
        (late, _payload(now_ms + 1, 2), "unknown_device", None),
        # Still wrong after the fix: refused again, with its reason.
        (late, b'{"ts": %d, "metrics": {"heart_rate": 900}}' % now_ms, "unknown_device", None),
        # Too large when it came: kept truncated, cannot be replayed whole.
        (known, b"x" * 10, "payload_too_large", 70_000),
        # Older than the window asked for: left alone.
        (late, _payload(now_ms + 2, 3), "unknown_device", None),
    ]
    with psycopg.connect(cli_database_url, autocommit=True) as conn:
        for n, (device, payload, reason, size) in enumerate(letters):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, payload_size, reason,"
                " detail) VALUES (%s, %s, %s, %s, %s, 'refused')",
                (
                    now - timedelta(days=2) if n == 4 else now,
                    f"community/{community}/wearable/{device}/telemetry",
                    payload,
                    size,
                    reason,
                ),
            )
    register(cli_database_url, community, [late])  # the fix
    since = (now - timedelta(hours=1)).isoformat()

    status, out = run(
        capsys,
        "dead-letters",
        "replay",
        "--reason",
        "unknown_device",
        "--dry-run",
        "--since",
        since,
    )
    assert status == 0
    assert "replayed 3 dead letter(s): 2 accepted, 1 rejected (dry run)" in out
    assert _rows(cli_database_url) == 0

    status, out = run(
        capsys, "dead-letters", "replay", "--reason", "unknown_device", "--since", since
    )
    assert status == 0, out
    assert "replayed 3 dead letter(s): 1 rejected, 2 stored" in out
    assert "out_of_range" in out
    assert _rows(cli_database_url) == 2
    # Already stored ones are skipped; --again replays them, and they are duplicates.
    status, out = run(
        capsys, "dead-letters", "replay", "--reason", "unknown_device", "--since", since
    )
    assert "replayed 1 dead letter(s): 1 rejected" in out
    status, out = run(
        capsys, "dead-letters", "replay", "--reason", "unknown_device", "--since", since, "--again"
    )
    assert "replayed 3 dead letter(s): 2 duplicate, 1 rejected" in out
    assert _rows(cli_database_url) == 2

    status, out = run(capsys, "dead-letters", "replay", "--device", known)
    assert "replayed 1 dead letter(s): 1 truncated" in out

    status, out = run(capsys, "dead-letters", "list", "--device", late, "--json", "--since", since)
    assert status == 0
    listed = [json.loads(line) for line in out.splitlines()]
    assert [d["replay_outcome"] for d in listed] == ["rejected", "duplicate", "duplicate"]
    with psycopg.connect(cli_database_url, autocommit=True) as conn:
        recorded = conn.execute(
            "SELECT outcome, count(*) FROM dead_letter_replays GROUP BY outcome ORDER BY outcome"
        ).fetchall()
    assert recorded == [("duplicate", 2), ("rejected", 3), ("stored", 2), ("truncated", 1)]


def _payload(ts_ms: int, seq: int) -> bytes:
    return json.dumps({"ts": ts_ms, "seq": seq, "metrics": {"heart_rate": 70}}).encode()


def _rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = one_row(conn, "SELECT count(*) FROM readings")
    return int(row[0])
