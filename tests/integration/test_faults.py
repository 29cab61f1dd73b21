"""Nothing accepted is lost: the pipeline killed, PostgreSQL stopped, the broker restarted.

Each runs against servers the test owns, the broker with the configuration the
project ships (persistence on, queue limits raised).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import orjson
import psycopg
import pytest

from core.topics import device_topic
from smartcommunity.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.integration.support import (
    PROCESS_START_S,
    Publisher,
    count,
    one_row,
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


@dataclass
class Rig:
    """A registered community, a pipeline process and a publisher on a private broker."""

    url: str
    community: str
    devices: list[str]
    env: dict[str, str]
    log: Path
    publisher: Publisher
    proc: subprocess.Popen[bytes]
    # An hour back: the stream's device times never run into the future limit.
    base_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 3_600_000)
    markers: int = 0  # marker events published so far (Rig.settle)

    def start_pipeline(self) -> None:
        self.proc = start_pipeline_process(self.env, self.log)

    def send(self, messages: int, *, start: int = 0, pause_every: int = 0) -> None:
        stream(
            self.publisher,
            self.community,
            self.devices,
            messages,
            self.base_ms,
            start=start,
            pause_every=pause_every,
        )

    def rows(self) -> int:
        return count(self.url)

    def reached(self, rows: int) -> bool:
        return self.rows() >= rows

    def wait_rows(self, rows: int, what: str) -> None:
        wait_for(lambda: self.rows() >= rows, 120, what)
        self.settle()

    def settle(self) -> None:
        """Until a marker published now is stored: the pipeline commits in the order the
        broker delivers, so whatever the broker still held (a redelivered duplicate
        included) is committed by then. The marker is an event, not a reading, so the
        readings counted stay the stream's own."""
        self.markers += 1
        marker = {"ts": int(time.time() * 1000), "event": "worn"}
        topic = device_topic(self.community, "wearable", self.devices[0], "event")
        self.publisher.publish(topic, orjson.dumps(marker))
        self.publisher.flush()
        wait_for(
            lambda: count(self.url, "SELECT count(*) FROM device_events") >= self.markers,
            120,
            "the marker behind the stream",
        )

    def assert_exactly_once(self, messages: int) -> None:
        assert self.rows() == messages * METRICS
        # Every (device, seq) made it, each once: nothing lost and nothing doubled.
        distinct = count(self.url, "SELECT count(DISTINCT (device_id, seq)) FROM readings")
        assert distinct == messages
        assert count(self.url, "SELECT count(*) FROM dead_letters") == 0


def _saved_counter(url: str, name: str) -> int:
    """A counter as the pipeline last saved it (a clean stop saves the final figures)."""
    with psycopg.connect(url) as conn:
        row = one_row(conn, "SELECT (counters->>%s)::int FROM pipeline_metrics", (name,))
    return int(row[0])


@contextmanager
def rig(url: str, broker: EmbeddedBroker, name: str, tmp_path: Path, **env: str) -> Iterator[Rig]:
    devices = [f"{name}-{n}" for n in range(DEVICES)]
    register(url, name, devices)
    log = tmp_path / "pipeline.log"
    publisher = Publisher(broker.url, f"pub-{name}")
    pipe_env = pipeline_env(url, broker.url, f"pipe-{name}", name, **env)
    the_rig = Rig(
        url=url,
        community=name,
        devices=devices,
        env=pipe_env,
        log=log,
        publisher=publisher,
        proc=start_pipeline_process(pipe_env, log),
    )
    try:
        wait_for(
            lambda: " running" in log.read_text(), PROCESS_START_S, "the pipeline to subscribe"
        )
        yield the_rig
    finally:
        publisher.close()
        stop_process(the_rig.proc)


def test_kill_9_mid_stream_then_restart_stores_everything_once(
    fresh_database_url: str, private_broker: EmbeddedBroker, unique_id: str, tmp_path: Path
) -> None:
    messages = 20_000
    with rig(fresh_database_url, private_broker, f"k{unique_id}", tmp_path) as r:
        sender = threading.Thread(target=r.send, args=(messages,), kwargs={"pause_every": 500})
        sender.start()
        wait_for(lambda: r.rows() >= messages * METRICS // 4, 60, "a quarter of the rows")
        r.proc.send_signal(signal.SIGKILL)
        r.proc.wait(10)
        assert r.rows() < messages * METRICS, "the kill came too late to test anything"
        sender.join(120)
        r.publisher.flush()
        r.start_pipeline()
        r.wait_rows(messages * METRICS, "every row after the restart")
        r.assert_exactly_once(messages)


def test_postgres_stopped_for_10s_mid_stream_loses_nothing(
    private_postgres: EmbeddedPostgres,
    private_broker: EmbeddedBroker,
    unique_id: str,
    tmp_path: Path,
) -> None:
    messages = 6_000
    with rig(private_postgres.url, private_broker, f"p{unique_id}", tmp_path) as r:
        r.send(messages // 2, pause_every=200)
        wait_for(lambda: r.rows() > 0, 60, "the first rows")
        private_postgres.stop()
        outage_started = time.monotonic()
        # Keep publishing into the outage: these must wait at the broker, not vanish.
        r.send(messages // 2, start=messages // 2)
        r.publisher.flush()
        # Ten seconds down, and the pipeline has met the outage (it says so as it retries).
        wait_for(
            lambda: (
                time.monotonic() - outage_started >= 10
                and "database unavailable" in r.log.read_text()
            ),
            60,
            "ten seconds of an outage the pipeline has seen",
        )
        assert r.proc.poll() is None, "the pipeline died during the outage"
        private_postgres.start()
        r.wait_rows(messages * METRICS, "every row after the outage")
        r.assert_exactly_once(messages)
        stop_process(r.proc)  # a clean stop saves the final counters
        saved = _saved_counter(private_postgres.url, "database_errors_total")
        assert saved >= 1, "the pipeline never saw the outage: the test proved nothing"


# Every session on the test's database but the caller's: the pipeline's pooled
# connections (writer, directory, alert store, heartbeat) and its LISTEN feed.
_TERMINATE_ALL = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
KILLS = 3


def test_database_sessions_killed_mid_stream_lose_nothing(
    fresh_database_url: str, private_broker: EmbeddedBroker, unique_id: str, tmp_path: Path
) -> None:
    """The server ends every session of the pipeline, three times under load: its
    pools make new connections, a batch cut off mid-transaction is written again, and
    every accepted reading is stored once."""
    messages = 12_000
    total = messages * METRICS
    with rig(fresh_database_url, private_broker, f"t{unique_id}", tmp_path) as r:
        sender = threading.Thread(target=r.send, args=(messages,), kwargs={"pause_every": 500})
        sender.start()
        killed: list[int] = []
        try:
            for kill in range(1, KILLS + 1):
                wait_for(partial(r.reached, total * kill // (KILLS + 1)), 60, f"kill {kill}")
                with psycopg.connect(r.url, autocommit=True) as conn:
                    row = conn.execute(_TERMINATE_ALL).fetchone()
                killed.append(int(row[0]) if row is not None else 0)
            rows_at_last_kill = r.rows()
        finally:
            sender.join(120)
        assert all(killed), f"a kill found no session of the pipeline: {killed}"
        assert rows_at_last_kill < total, "the kills came too late to test anything"
        r.publisher.flush()
        r.wait_rows(total, "every row after the kills")
        assert r.proc.poll() is None, "the pipeline died with its connections"
        r.assert_exactly_once(messages)
        stop_process(r.proc)  # a clean stop saves the final counters
        saved = _saved_counter(r.url, "database_connections_lost_total")
        assert saved >= KILLS, "the pools never saw a lost connection: the test proved nothing"


def test_broker_restarted_mid_stream_loses_and_duplicates_nothing(
    fresh_database_url: str, private_broker: EmbeddedBroker, unique_id: str, tmp_path: Path
) -> None:
    messages = 10_000
    # Small batches and a small window keep a backlog queued at the broker when it restarts.
    with rig(
        fresh_database_url,
        private_broker,
        f"b{unique_id}",
        tmp_path,
        SC_INGEST__BATCH_SIZE="200",
        SC_GATEWAY__RECEIVE_MAXIMUM="400",
    ) as r:
        r.send(messages // 2)
        r.publisher.flush()
        connections = r.publisher.connections
        private_broker.restart()
        r.publisher.wait_reconnected(connections)
        r.send(messages // 2, start=messages // 2)
        r.publisher.flush(timeout=120)
        r.wait_rows(messages * METRICS, "every row")
        assert r.proc.poll() is None, "the pipeline died with the broker"
        r.assert_exactly_once(messages)
        assert "disconnected from broker" in r.log.read_text()
