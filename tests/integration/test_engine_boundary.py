"""The rule engine's per-message boundary, on real Mosquitto and PostgreSQL (issue 13).

A rule that raises on one device's message makes that message an
``internal_error`` dead letter (its content is committed already); the rest of
the batch is evaluated and its alerts raised.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from smartcommunity.cli import main
from tests.integration.support import Publisher, count, pipeline_thread, register, wait_for

pytestmark = pytest.mark.integration


def _sos(now_ms: int, seq: int) -> bytes:
    return json.dumps({"ts": now_ms, "seq": seq, "event": "sos_pressed"}).encode()


def test_a_rule_that_raises_on_one_message_dead_letters_it_and_the_others_alert(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community = f"c{unique_id}"
    bad = f"bad{unique_id}"
    good = [f"ok{i}{unique_id}" for i in range(4)]
    register(fresh_database_url, community, [bad, *good])
    now_ms = int(time.time() * 1000)
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    try:
        with pipeline_thread(
            fresh_database_url, mqtt_url, f"p-{unique_id}", community, evaluate_raise_device=bad
        ):
            # One burst, the failing device among the others: they share batches.
            devices = [good[0], good[1], bad, good[2], good[3]]
            for n, device in enumerate(devices):
                publisher.publish(f"community/{community}/wearable/{device}/event", _sos(now_ms, n))
            publisher.publish(
                f"community/{community}/wearable/{bad}/telemetry",
                json.dumps({"ts": now_ms, "seq": 9, "metrics": {"heart_rate": 70}}).encode(),
            )
            publisher.flush()
            wait_for(
                lambda: (
                    count(fresh_database_url, "SELECT count(*) FROM alerts") >= len(good)
                    and count(fresh_database_url, "SELECT count(*) FROM dead_letters") >= 2
                ),
                60,
                "the others' SOS alerts and the failing device's dead letters",
            )
    finally:
        publisher.close()

    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        alerts = conn.execute("SELECT rule_id, device_id FROM alerts ORDER BY device_id").fetchall()
        dead = conn.execute(
            "SELECT topic, reason, detail FROM dead_letters ORDER BY topic"
        ).fetchall()
        stored = conn.execute(
            "SELECT (SELECT count(*) FROM device_events WHERE device_id = %s),"
            " (SELECT count(*) FROM readings WHERE device_id = %s)",
            (bad, bad),
        ).fetchone()
        saved = conn.execute("SELECT counters FROM pipeline_metrics").fetchone()
    assert alerts == [("wearable.sos", d) for d in sorted(good)]
    assert [(t.rsplit("/", 1)[1], r) for t, r, _ in dead] == [
        ("event", "internal_error"),
        ("telemetry", "internal_error"),
    ]
    assert all(t.split("/")[3] == bad for t, _, _ in dead)
    event_detail, reading_detail = dead[0][2], dead[1][2]
    assert "rule evaluation (wearable.sos): RuntimeError: test hook" in event_detail
    assert "RuntimeError: test hook" in reading_detail
    assert "wearable.heart_rate_high" in reading_detail
    # The content was committed before the engine saw it: the dead letter records the
    # failed evaluation, nothing was lost.
    assert stored == (1, 1)
    # Counted in /metrics (the counters the worker saved on stop).
    assert saved is not None
    assert saved[0]["messages_rejected_total"] == {"internal_error": 2}


def test_a_replayed_sos_raises_its_alert_in_the_running_pipeline(
    cli_database_url: str,
    mqtt_url: str,
    unique_id: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dead letter replayed after a fix (another process: the CLI) is evaluated by the
    running engine as any message is: an SOS that was refused raises its alert."""
    community, late = f"c{unique_id}", f"late{unique_id}"
    register(cli_database_url, community, [])
    topic = f"community/{community}/wearable/{late}/event"
    now_ms = int(time.time() * 1000) - 60_000
    with pipeline_thread(cli_database_url, mqtt_url, f"p-{unique_id}", community):
        # Refused while the device was not registered yet: a dead letter.
        publisher = Publisher(mqtt_url, f"pub-{unique_id}")
        try:
            publisher.publish(topic, _sos(now_ms, 1))
            publisher.flush()
        finally:
            publisher.close()
        wait_for(
            lambda: count(cli_database_url, "SELECT count(*) FROM dead_letters") == 1,
            60,
            "the SOS of the unregistered device as a dead letter",
        )
        register(cli_database_url, community, [late])  # the fix
        assert main(["dead-letters", "replay", "--reason", "unknown_device"]) == 0
        assert "1 stored" in capsys.readouterr().out
        wait_for(
            lambda: count(cli_database_url, "SELECT count(*) FROM alerts") >= 1,
            60,
            "the replayed SOS's alert",
        )
    with psycopg.connect(cli_database_url, autocommit=True) as conn:
        alerts = conn.execute("SELECT rule_id, device_id, state FROM alerts").fetchall()
    assert alerts == [("wearable.sos", late, "open")]
