"""Hand-written MQTT-to-PostgreSQL ingesters that ``bench/ingest.py`` measures the platform against.

Run as a child process of the bench, one ingester per process, so that its CPU
time and peak memory can be read on their own::

    python bench/baselines.py {naive,batched} --mqtt-url mqtt://127.0.0.1:PORT \
        --database-url postgresql://... --client-id ID

Both hold a persistent session (fixed client id; MQTT 5 with
``clean_start=False`` and a session expiry, or MQTT 3.1.1 with
``clean_session=False`` under ``--protocol 3.1.1``), subscribe the device
topics at QoS 1 and let paho acknowledge each message on receipt (auto-ack).
Neither validates nor de-duplicates; both write ``readings`` rows with the
platform's columns.

- ``naive``: one autocommit ``INSERT`` per metric, inside ``on_message``.
- ``batched``: ``on_message`` only enqueues on a ``queue.Queue``; a writer
  thread drains it, decodes and sends one binary ``COPY`` transaction per
  5,000 rows or 200 ms, whichever comes first. When the queue is empty the
  writer sleeps 2 ms instead of blocking on it: waking a thread for every
  message cost ~50 us of CPU per message here, more than the message itself.

The process prints ``ready`` on stdout on CONNACK (its session is kept, so the
broker delivers from then on) and
runs until SIGTERM or SIGINT; the batched one flushes what it holds first.
This module imports nothing from the platform, on purpose.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

__all__ = ["READY", "main", "new_client"]


def _ts(value: Any) -> datetime:
    """The bench sends ISO 8601 (what the reference ingester reads); epoch ms also works."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return datetime.fromtimestamp(value / 1000, UTC)


# The line the bench waits for: printed on CONNACK, when the broker starts delivering.
READY = "ready"
TOPIC_FILTER = "community/+/+/+/+"
# One hour: the session must outlive the gap between priming it and the ingester's start.
SESSION_EXPIRY_S = 3600
# The batched ingester's flush triggers, as in the issue: 5,000 rows or 200 ms.
BATCH_ROWS = 5_000
FLUSH_INTERVAL_S = 0.2
# Bounds what the batched ingester holds: past it paho's network thread waits and
# TCP pushes back on the broker, as a hand-written bounded queue would.
QUEUE_LIMIT = 100_000
# The batched writer's pause when its queue is empty and its batch not yet due.
IDLE_SLEEP_S = 0.002
# How long a start or a stop may take before the ingester gives up.
CONNECT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

_INSERT = (
    "INSERT INTO readings (device_id, metric, ts, value, seq, received_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
_COPY = "COPY readings (device_id, metric, ts, value, seq, received_at) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ["text", "text", "timestamptz", "float8", "int8", "timestamptz"]

Row = tuple[str, str, datetime, float, int | None, datetime]


def _device_id(topic: str) -> str:
    # community/{community}/{class}/{device}/{channel}
    return topic.split("/")[3]


def new_client(client_id: str, *, v5: bool, clean_start: bool) -> mqtt.Client:
    """A paho client speaking MQTT 5 or 3.1.1: 3.1.1 takes its session choice here
    (clean_session), MQTT 5 takes it in connect() (clean_start)."""
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else clean_start,
    )


def _client(
    client_id: str, on_message: Any, connected: threading.Event, *, v5: bool
) -> mqtt.Client:
    client = new_client(client_id, v5=v5, clean_start=False)  # a persistent session

    def on_connect(
        c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            print(f"connection refused: {reason}", file=sys.stderr, flush=True)
            return
        # The session is kept, so the broker delivers from here on; subscribing
        # again is harmless and covers a broker that lost the session.
        if v5:
            c.subscribe(TOPIC_FILTER, options=SubscribeOptions(qos=1))
        else:
            c.subscribe(TOPIC_FILTER, qos=1)
        connected.set()

    client.on_connect = on_connect
    client.on_message = on_message
    return client


def _connect(client: mqtt.Client, mqtt_url: str, *, v5: bool) -> None:
    parts = urlsplit(mqtt_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    if not v5:
        client.connect(host, port, keepalive=60)
        return
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect(host, port, keepalive=60, clean_start=False, properties=properties)


class NaiveIngester:
    """Everything in the callback: parse, then one autocommitted INSERT per metric."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)

    def on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        device_id = _device_id(msg.topic)
        ts = _ts(data["ts"])
        received_at = datetime.now(UTC)
        for metric, value in data["metrics"].items():
            self.conn.execute(_INSERT, (device_id, metric, ts, value, data.get("seq"), received_at))

    def close(self) -> None:
        self.conn.close()


def _decode(item: tuple[str, bytes | bytearray, float], rows: list[Row]) -> None:
    topic, payload, received = item
    data = orjson.loads(payload)
    device_id = _device_id(topic)
    ts = _ts(data["ts"])
    received_at = datetime.fromtimestamp(received, UTC)
    seq = data.get("seq")
    rows.extend(
        (device_id, metric, ts, float(value), seq, received_at)
        for metric, value in data["metrics"].items()
    )


class BatchedIngester:
    """Callback enqueues; a writer thread decodes and COPYs by size or time."""

    def __init__(self, database_url: str, *, batch_rows: int, flush_interval_s: float) -> None:
        self.conn = psycopg.connect(database_url)
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.inbox: queue.Queue[tuple[str, bytes | bytearray, float]] = queue.Queue(QUEUE_LIMIT)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="copy-writer", daemon=True)
        self.thread.start()

    def on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put((msg.topic, msg.payload, time.time()))

    def _run(self) -> None:
        while True:
            try:
                first = self.inbox.get(timeout=self.flush_interval_s)
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            deadline = time.monotonic() + self.flush_interval_s
            rows: list[Row] = []
            _decode(first, rows)
            # Checked after whole messages, so a message's rows commit together.
            while len(rows) < self.batch_rows:
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    if time.monotonic() >= deadline or self.stopping.is_set():
                        break
                    # Sleep rather than block on the queue: a wake-up per message
                    # costs more than the message.
                    time.sleep(IDLE_SLEEP_S)
                    continue
                _decode(item, rows)
            self._flush(rows)

    def _flush(self, rows: list[Row]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(STOP_TIMEOUT_S)
        self.conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["naive", "batched"])
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    parser.add_argument("--flush-ms", type=int, default=round(FLUSH_INTERVAL_S * 1000))
    args = parser.parse_args(argv)

    ingester: NaiveIngester | BatchedIngester
    if args.kind == "naive":
        ingester = NaiveIngester(args.database_url)
    else:
        ingester = BatchedIngester(
            args.database_url, batch_rows=args.batch_rows, flush_interval_s=args.flush_ms / 1000
        )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    connected = threading.Event()
    v5 = args.protocol == "5"
    client = _client(args.client_id, ingester.on_message, connected, v5=v5)
    _connect(client, args.mqtt_url, v5=v5)
    client.loop_start()
    try:
        if not connected.wait(CONNECT_TIMEOUT_S):
            print(f"not subscribed after {CONNECT_TIMEOUT_S:.0f} s", file=sys.stderr, flush=True)
            return 1
        print(READY, flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        client.disconnect()
        client.loop_stop()
        ingester.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
