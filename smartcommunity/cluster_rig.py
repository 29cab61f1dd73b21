"""Parts to drive a clustered deployment on one machine: workers, devices, figures.

Used by the cluster tests (tests/cluster/), the cluster benchmark (bench/cluster.py)
and for a try (docs/scale-out.md). Workers are ``smartcommunity worker``
processes, so that they can be killed with SIGKILL as a crashed machine would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "FailoverPublisher",
    "WorkerProcess",
    "poll",
    "worker_env",
    "worker_metrics",
]

ROOT = Path(__file__).resolve().parents[1]


def poll(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Until ``predicate()`` holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except psycopg.OperationalError:
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def worker_env(
    *,
    database_url: str,
    amqp_urls: Sequence[str],
    client_id: str,
    shards: int,
    queue_prefix: str,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
    env.update(
        SC_DATABASE_URL=database_url,
        SC_CLUSTER__AMQP_URLS=",".join(amqp_urls),
        SC_CLUSTER__SHARDS=str(shards),
        SC_CLUSTER__QUEUE_PREFIX=queue_prefix,
        SC_CLUSTER__RECONNECT_MAX_S="2",
        SC_GATEWAY__CLIENT_ID=client_id,
        SC_DATA_DIR=str(data_dir),
        SC_INGEST__RETRY_MAX_S="1",
        SC_ALERTS__MQTT_PUBLISH="false",
        **extra,
    )
    return env


@dataclass
class WorkerProcess:
    """One ``smartcommunity worker`` process."""

    name: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "smartcommunity.cli", "worker"],
                env=self.env,
                cwd=ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the broker, nothing flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


def worker_metrics(url: str, worker: str) -> dict[str, Any]:
    """The counters a worker last saved (what the API's /metrics renders), or {}."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT counters FROM pipeline_metrics WHERE worker = %s", (worker,)
        ).fetchone()
    return dict(row[0]) if row is not None and row[0] else {}


@dataclass
class FailoverPublisher:
    """A device gateway's MQTT 3.1.1 QoS 1 client that moves to the next node on a loss.

    A persistent session (fixed client id, clean_session=False) keeps paho's
    unacknowledged publishes, which it sends again on the next connection.
    """

    ports: Sequence[int]
    client_id: str
    username: str = "guest"
    password: str = "guest"  # noqa: S105 - RabbitMQ's loopback-only default user
    host: str = "127.0.0.1"
    sent: int = 0
    acked: int = 0  # PUBACKs: paho removes a message once, at its first PUBACK
    failovers: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    _index: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        client.username_pw_set(self.username, self.password)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(500)
        client.reconnect_delay_set(1, 2)
        client.on_connect = lambda *_a: self.connected.set()
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = lambda *_a: self._next_node(client)
        client.on_publish = self._on_publish
        self.client = client
        client.connect_async(self.host, self.ports[self._index], keepalive=10)
        client.loop_start()

    def _next_node(self, client: mqtt.Client) -> None:
        self._index = (self._index + 1) % len(self.ports)
        # paho's ``port`` setter refuses while a reconnect is under way, which is
        # exactly when we move; its reconnect() reads this attribute each time.
        client._port = self.ports[self._index]

    def _on_publish(self, *_args: Any) -> None:
        with self._lock:
            self.acked += 1

    def _on_disconnect(self, client: mqtt.Client, *_args: Any) -> None:
        self.connected.clear()
        self.failovers += 1
        self._next_node(client)

    def wait_connected(self, timeout: float = 60) -> None:
        if not self.connected.wait(timeout):
            raise AssertionError(f"{self.client_id} did not connect")

    def publish(self, topic: str, payload: bytes) -> None:
        """Queued by paho while disconnected (kept session) and sent on reconnect."""
        with self._lock:
            self.sent += 1
        self.client.publish(topic, payload, qos=1)

    def flush(self, timeout: float = 180) -> None:
        """Until the broker acknowledged every publish (it has them durably then)."""
        poll(
            lambda: self.acked >= self.sent,
            timeout,
            f"{self.client_id}: broker acknowledgements ({self.acked} of {self.sent})",
            every=0.1,
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
