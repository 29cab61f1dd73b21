"""Helpers for pipeline tests: register devices, publish streams, run the pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.abc import Params, QueryNoTemplate

from core.observability import PipelineCounters
from core.settings import (
    DecoderSettings,
    FaultHookSettings,
    GatewaySettings,
    IngestSettings,
    Settings,
)
from core.tokens import hash_token
from core.topics import device_topic
from gateway.bridge import parse_mqtt_url
from gateway.process import run_pipeline
from smartcommunity.cluster_rig import poll
from store import schema

ROOT = Path(__file__).resolve().parents[2]


def add_community(conn: psycopg.Connection[Any], community: str) -> None:
    """The community ``community`` (named as its id), unless it is there already."""
    conn.execute(
        "INSERT INTO communities (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (community, community),
    )


def register(url: str, community: str, devices: list[str], device_class: str = "wearable") -> None:
    schema.upgrade(url)
    with psycopg.connect(url) as conn:
        add_community(conn, community)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, %s)",
                [(d, community, device_class) for d in devices],
            )


def community_of(url: str, community: str, size: int) -> tuple[str, list[str]]:
    """``community`` with ``size`` wearables, ``<community>-0`` and on, registered:
    returns the community's id and the devices' ids."""
    devices = [f"{community}-{n}" for n in range(size)]
    register(url, community, devices)
    return community, devices


def one_row(
    db: psycopg.Connection[Any], query: QueryNoTemplate, params: Params | None = None
) -> Any:
    """The row ``query`` must return: the test fails here, saying which query, when none."""
    row = db.execute(query, params).fetchone()
    assert row is not None, query
    return row


def api_token_id(db: psycopg.Connection[Any], secret: str) -> int:
    """The id of the API token whose secret is ``secret``."""
    row = one_row(db, "SELECT id FROM api_tokens WHERE token_hash = %s", (hash_token(secret),))
    return int(row[0])


def count(url: str, sql: str = "SELECT count(*) FROM readings") -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        row = one_row(conn, sql.encode())
        return int(row[0])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Until ``predicate()`` holds, a database that does not answer yet counting as not yet."""
    poll(predicate, timeout, what, every=0.1)


def committed(counters: PipelineCounters) -> int:
    """Messages the pipeline has committed and acknowledged (stored or dead-lettered)."""
    return int(counters.snapshot()["batch_size"]["sum"])


def wait_committed(counters: PipelineCounters, messages: int, timeout: float = 30) -> None:
    """Until ``messages`` messages in all have been committed: the fact that says a
    duplicate or a refusal has been dealt with, where a row count cannot move."""
    wait_for(lambda: committed(counters) >= messages, timeout, f"{messages} committed messages")


def telemetry(i: int, base_ms: int) -> bytes:
    return json.dumps(
        {
            "ts": base_ms + i,
            "seq": i,
            "metrics": {"heart_rate": 60 + i % 40, "spo2": 95 + i % 5, "battery": 50},
        }
    ).encode()


class Publisher:
    """A QoS 1 publisher with its own persistent session, so it rides out broker restarts."""

    def __init__(self, mqtt_url: str, client_id: str) -> None:
        address = parse_mqtt_url(mqtt_url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 2)
        if address.username:
            self.client.username_pw_set(address.username, address.password)
        self.connected = threading.Event()
        # Connections made so far: a reconnect is seen as this count moving on.
        self.connections = 0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        self.pending: list[mqtt.MQTTMessageInfo] = []

    def _on_connect(self, *_: object) -> None:
        self.connections += 1
        self.connected.set()

    def wait_connected(self, timeout: float = 30) -> None:
        if not self.connected.wait(timeout):
            raise AssertionError("publisher did not (re)connect")

    def wait_reconnected(self, since: int, timeout: float = 30) -> None:
        """Until a connection after the ``since``-th one is up."""
        wait_for(lambda: self.connections > since and self.connected.is_set(), timeout, "reconnect")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.pending.append(self.client.publish(topic, payload, qos=qos))

    def flush(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for info in self.pending:
            while not info.is_published():
                if time.monotonic() > deadline:
                    raise AssertionError("publisher could not deliver all messages")
                time.sleep(0.01)
        self.pending.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stream(
    publisher: Publisher,
    community: str,
    devices: list[str],
    count_: int,
    base_ms: int,
    *,
    start: int = 0,
    pause_every: int = 0,
) -> None:
    for i in range(start, start + count_):
        device = devices[i % len(devices)]
        publisher.publish(
            device_topic(community, "wearable", device, "telemetry"), telemetry(i, base_ms)
        )
        if pause_every and i % pause_every == 0:
            time.sleep(0.01)  # a steady stream rather than one burst


def pipeline_env(
    database_url: str, mqtt_url: str, client_id: str, community: str, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
    env.update(
        SC_DATABASE_URL=database_url,
        SC_MQTT_URL=mqtt_url,
        SC_GATEWAY__CLIENT_ID=client_id,
        SC_GATEWAY__TOPIC_FILTER=f"community/{community}/+/+/+",
        SC_GATEWAY__RECONNECT_MAX_S="2",
        SC_INGEST__RETRY_MAX_S="1",
        **extra,
    )
    return env


# Bound on a pipeline process's start (interpreter, imports, migrations, subscribe):
# seconds on an idle machine, past 30 s seen with the suite's four workers on two
# loaded cores. A bound for that machine, not an expectation.
PROCESS_START_S = 120


def start_module(
    module: str, args: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """``python -m module args`` from the repository root, its output appended to ``log``."""
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    finally:
        handle.close()


def start_pipeline_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start_module("smartcommunity.cli", ["run"], env, log)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def pipeline_thread(
    database_url: str,
    mqtt_url: str,
    client_id: str,
    community: str,
    *,
    decoders: DecoderSettings | None = None,
    **hooks: Any,
) -> Iterator[PipelineCounters]:
    """The pipeline in this process: fast to start, for tests that need no crash.

    It subscribes to the test's community only: the broker may be shared with
    other tests and keeps their retained statuses. Yields the pipeline's counters,
    so a test can wait for what was committed (``wait_committed``). ``hooks`` are
    the fault hooks to set, by their FaultHookSettings names.
    """
    unknown = hooks.keys() - FaultHookSettings.model_fields.keys()
    if unknown:  # the settings ignore a name they do not have: here it is a mistake
        raise TypeError(f"no such fault hook: {sorted(unknown)}")
    settings = Settings(
        database_url=database_url,
        mqtt_url=mqtt_url,
        gateway=GatewaySettings(client_id=client_id, topic_filter=f"community/{community}/+/+/+"),
        ingest=IngestSettings(flush_interval_ms=50),
        test_hooks=FaultHookSettings(**hooks),
        decoders=decoders or DecoderSettings(),
    )
    stop = threading.Event()
    ready = threading.Event()
    errors: list[BaseException] = []
    counters = PipelineCounters()

    def target() -> None:
        try:
            run_pipeline(settings, stop, ready=ready, counters=counters)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=target, name=f"pipeline-{client_id}", daemon=True)
    thread.start()
    assert ready.wait(30), "pipeline did not start"
    try:
        yield counters
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "pipeline did not stop"
    if errors:
        raise errors[0]


@dataclass
class Webhooks:
    """What a local webhook receiver got: each POST's headers (lower-cased) and body.
    The first ``failures`` posts are answered 503, the others 204."""

    url: str = ""
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    failures: int = 0


@contextmanager
def webhook_receiver(path: str = "/hook") -> Iterator[Webhooks]:
    """An HTTP endpoint on loopback for the block, recording what is posted to it."""
    got = Webhooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
            if got.failures > 0:
                got.failures -= 1
                self.send_response(503)
            else:
                self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield got
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()  # the listening socket, or a ResourceWarning when collected
