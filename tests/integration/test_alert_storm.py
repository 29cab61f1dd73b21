"""An alert storm: the default rule pack on, every device alarming at once.

This stalled ingest: the commit thread waited for the rule engine after each
batch (a hand-off of 4 batches), and the engine paid several round trips per
alert transition while a noisy battery flipped an alert on every reading. Now
commits never wait on the engine, the engine catches up on its whole backlog at
once, and the default pack's on/off-delays and chattering make a storm one
alert per (rule, device).
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from api.exposition import Figures, render
from core.topics import device_topic
from tests.exposition import parse_exposition
from tests.integration.support import (
    Publisher,
    count,
    pipeline_thread,
    register,
    wait_for,
)

pytestmark = pytest.mark.integration

DEVICES = 500
READINGS = 12  # per device, one a minute of device time
ROWS = DEVICES * READINGS * 3
# Bounds of the polls below, for the suite's loaded machine (each is seconds alone).
WAIT_S = 300


def _counters(url: str, worker: str) -> dict[str, Any] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT counters FROM pipeline_metrics WHERE worker = %s", (worker,)
        ).fetchone()
    return None if row is None else dict(row[0])


def _caught_up(url: str, worker: str, messages: int) -> bool:
    """A snapshot saved after every message was committed says the engine has no lag
    (an earlier snapshot's 0 says nothing about the commits after it)."""
    counters = _counters(url, worker)
    return (
        counters is not None
        and int(counters.get("messages_accepted_total", 0)) >= messages
        and int(counters.get("engine_lag_messages", -1)) == 0
    )


def test_a_storm_of_flapping_readings_commits_every_row_and_the_engine_catches_up(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community = f"s{unique_id}"
    devices = [f"s{unique_id}-{n}" for n in range(DEVICES)]
    register(fresh_database_url, community, devices)
    worker = f"p-{unique_id}"
    base = int(time.time() * 1000) - 3_600_000
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    try:
        with pipeline_thread(fresh_database_url, mqtt_url, worker, community):
            seq = 0
            for k in range(READINGS):
                for device in devices:
                    metrics = {
                        # Every device's battery is low and jitters across the
                        # critical level; SpO2 flaps across its raise level.
                        "battery": 5.0 if k % 2 == 0 else 12.0,
                        "spo2": 85.0 if k % 2 == 0 else 95.0,
                        "heart_rate": 70,
                    }
                    payload = {"ts": base + k * 60_000, "seq": seq, "metrics": metrics}
                    publisher.publish(
                        device_topic(community, "wearable", device, "telemetry"),
                        json.dumps(payload).encode(),
                    )
                    seq += 1
            publisher.flush(WAIT_S)
            wait_for(lambda: count(fresh_database_url) >= ROWS, WAIT_S, f"{ROWS} rows")
            # Every device's low battery raised its alert; the engine has seen it all.
            wait_for(
                lambda: (
                    count(
                        fresh_database_url,
                        "SELECT count(*) FROM alerts WHERE rule_id = 'wearable.battery_low'",
                    )
                    >= DEVICES
                ),
                WAIT_S,
                "a battery alert for every device",
            )
            wait_for(
                lambda: _caught_up(fresh_database_url, worker, DEVICES * READINGS),
                WAIT_S,
                "engine lag back to 0",
            )
    finally:
        publisher.close()
    assert count(fresh_database_url) == ROWS
    assert count(fresh_database_url, "SELECT count(*) FROM dead_letters") == 0
    # The lag is what /metrics renders from the saved counters.
    counters = _counters(fresh_database_url, worker)
    assert counters is not None
    types, samples = parse_exposition(render(Figures(workers={worker: counters})).decode())
    assert samples[("sc_pipeline_engine_lag_messages", (("worker", worker),))] == 0
    assert types["sc_pipeline_engine_lag_seconds"] == "gauge"
    # At most one alert per (rule, device), opened or ever resolved.
    assert (
        count(
            fresh_database_url,
            "SELECT coalesce(max(n), 0) FROM"
            " (SELECT count(*) AS n FROM alerts GROUP BY rule_id, subject) AS per_subject",
        )
        == 1
    )
    by_rule = {
        rule: count(
            fresh_database_url,
            f"SELECT count(*) FROM alerts WHERE rule_id = '{rule}'",
        )
        for rule in ("wearable.battery_low", "wearable.battery_critical", "wearable.spo2_low")
    }
    # Low battery held for 3 readings and 5 min: one each. Neither the critical level
    # nor SpO2 stayed past its level for 2-3 readings in a row: their on-delays hold.
    assert by_rule == {
        "wearable.battery_low": DEVICES,
        "wearable.battery_critical": 0,
        "wearable.spo2_low": 0,
    }
