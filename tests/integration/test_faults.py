"""Nothing accepted is lost: the pipeline killed, PostgreSQL stopped, the broker restarted.

Each runs against servers the test owns, the broker with the configuration the
project ships (persistence on, queue limits raised).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from smartcommunity.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.integration.support import (
    Publisher,
    count,
    pipeline_env,
    register,
    start_pipeline_process,
    stop_process,
    stream,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES = 200
METRICS = 3  # heart_rate, spo2, battery per message


def _exactly_once(url: str, messages: int) -> None:
    assert count(url) == messages * METRICS
    # Every (device, seq) made it, each once: nothing lost and nothing doubled.
    assert count(url, "SELECT count(DISTINCT (device_id, seq)) FROM readings") == messages
    assert count(url, "SELECT count(*) FROM dead_letters") == 0


def test_kill_9_mid_stream_then_restart_stores_everything_once(
    fresh_database_url: str, private_broker: EmbeddedBroker, unique_id: str, tmp_path: Path
) -> None:
    messages = 20_000
    community, devices = f"k{unique_id}", [f"k{unique_id}-{n}" for n in range(DEVICES)]
    register(fresh_database_url, community, devices)
    env = pipeline_env(fresh_database_url, private_broker.url, f"kill-{unique_id}", community)
    log = tmp_path / "pipeline.log"
    proc = start_pipeline_process(env, log)
    publisher = Publisher(private_broker.url, f"pub-{unique_id}")
    base = int(time.time() * 1000) - 3_600_000
    try:
        wait_for(lambda: " running" in log.read_text(), 30, "the pipeline to subscribe")
        sender = threading.Thread(
            target=stream,
            args=(publisher, community, devices, messages, base),
            kwargs={"pause_every": 500},
        )
        sender.start()
        wait_for(lambda: count(fresh_database_url) >= messages * METRICS // 4, 60, "a quarter")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored_at_kill = count(fresh_database_url)
        assert stored_at_kill < messages * METRICS, "the kill came too late to test anything"
        sender.join(120)
        publisher.flush()
        proc = start_pipeline_process(env, log)
        wait_for(lambda: count(fresh_database_url) >= messages * METRICS, 120, "every row")
        time.sleep(1)  # anything extra would show up now
    finally:
        publisher.close()
        stop_process(proc)
    _exactly_once(fresh_database_url, messages)


def test_postgres_stopped_for_10s_mid_stream_loses_nothing(
    private_postgres: EmbeddedPostgres,
    private_broker: EmbeddedBroker,
    unique_id: str,
    tmp_path: Path,
) -> None:
    messages = 6_000
    url = private_postgres.url
    community, devices = f"p{unique_id}", [f"p{unique_id}-{n}" for n in range(DEVICES)]
    register(url, community, devices)
    env = pipeline_env(url, private_broker.url, f"pg-{unique_id}", community)
    log = tmp_path / "pipeline.log"
    proc = start_pipeline_process(env, log)
    publisher = Publisher(private_broker.url, f"pub-{unique_id}")
    base = int(time.time() * 1000) - 3_600_000
    try:
        wait_for(lambda: " running" in log.read_text(), 30, "the pipeline to subscribe")
        stream(publisher, community, devices, messages // 2, base, pause_every=200)
        wait_for(lambda: count(url) > 0, 60, "the first rows")
        private_postgres.stop()
        outage_started = time.monotonic()
        # Keep publishing into the outage: these must wait at the broker, not vanish.
        stream(publisher, community, devices, messages // 2, base, start=messages // 2)
        publisher.flush()
        time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
        assert proc.poll() is None, "the pipeline died during the outage"
        private_postgres.start()
        wait_for(lambda: count(url) >= messages * METRICS, 120, "every row after the outage")
        time.sleep(1)
    finally:
        publisher.close()
        stop_process(proc)
    _exactly_once(url, messages)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (counters->>'database_errors_total')::int FROM pipeline_metrics"
        ).fetchone()
    # Saved every few seconds: present unless the run was shorter than that.
    assert row is None or row[0] >= 0


def test_broker_restarted_mid_stream_loses_and_duplicates_nothing(
    fresh_database_url: str, private_broker: EmbeddedBroker, unique_id: str, tmp_path: Path
) -> None:
    messages = 10_000
    community, devices = f"b{unique_id}", [f"b{unique_id}-{n}" for n in range(DEVICES)]
    register(fresh_database_url, community, devices)
    env = pipeline_env(
        fresh_database_url,
        private_broker.url,
        f"brk-{unique_id}",
        community,
        # Small, slow batches keep a backlog queued at the broker when it restarts.
        SC_INGEST__BATCH_SIZE="200",
        SC_GATEWAY__RECEIVE_MAXIMUM="400",
    )
    log = tmp_path / "pipeline.log"
    proc = start_pipeline_process(env, log)
    publisher = Publisher(private_broker.url, f"pub-{unique_id}")
    base = int(time.time() * 1000) - 3_600_000
    try:
        wait_for(lambda: " running" in log.read_text(), 30, "the pipeline to subscribe")
        stream(publisher, community, devices, messages // 2, base)
        publisher.flush()
        private_broker.restart()
        time.sleep(0.5)  # the publisher notices the drop before we wait for its return
        publisher.wait_connected()
        stream(publisher, community, devices, messages // 2, base, start=messages // 2)
        publisher.flush(timeout=120)
        wait_for(lambda: count(fresh_database_url) >= messages * METRICS, 120, "every row")
        time.sleep(1)
        assert proc.poll() is None, "the pipeline died with the broker"
    finally:
        publisher.close()
        stop_process(proc)
    _exactly_once(fresh_database_url, messages)
