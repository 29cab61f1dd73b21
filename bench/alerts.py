"""Alert latency, and what the rule engine costs ingest.

    .venv/bin/python bench/alerts.py [--devices 2000] [--messages 100000]
                                     [--rate 1500] [--duration 30] [--incidents 2]

Both parts run against a fresh database on ``--database-url``'s server (dropped
afterwards) and a private Mosquitto with the shipped configuration, with the
default rule pack active and a demo community's device mix (all four classes,
fire sensors spread over 20 buildings) simulated by ``simulators``.

1. Throughput, rules off vs on, in the same run: ``--messages`` telemetry
   messages are published and PUBACKed into the pipeline's persistent session,
   then ``smartcommunity run`` starts (``SC_ALERTS__ENABLED`` false or true)
   and is timed from "pipeline running" (the engine loaded) to the commit of
   the last row. Runs alternate off/on (``--repeat`` pairs); the median of each
   is reported, and their ratio is the figure.
2. Latency, rules on, live: the pipeline and the API (``smartcommunity api``)
   run while background telemetry goes out at ``--rate`` msgs/s and incidents
   are injected ``--incidents`` times a second, each on devices not used
   before: an SOS (critical), SpO2 85 % (major: two readings, the first dated
   past the rule's on-delay, the second timed), and two smoke detectors of one
   building 0.3 s apart (a pre-alarm, then the same alert raised to a confirmed
   fire). For each expected alert transition: publish -> written (the history
   row's time, inside the alert transaction), publish -> received on the
   API's live stream (SSE, after commit and ``pg_notify``), and publish ->
   received on the MQTT alert topic (announced transitions: a flood groups the
   non-critical ones, critical ones are never grouped).

Times are taken on one machine (the bench, the database and the servers share
its clock). The pipeline commits by group commit (``SC_INGEST__FLUSH_INTERVAL_MS``
0 by default: no timer); ``--flush-ms`` sets an extra batch wait for both parts.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import MQTTErrorCode

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.pack import DEFAULTS_DIR, load_rules
from bench.fixture import BenchError, read_alert_stream
from bench.ingesters import Child, clean_env
from bench.publisher import connected_client, prime_session
from bench.report import quantile
from bench.scratch import scratch_database
from core.models import Device
from core.rules import ThresholdRule
from simulators.community import demo_devices
from simulators.devices import build_model
from simulators.fleet import event_payload, telemetry_payload
from simulators.model import SimEvent
from smartcommunity.embedded import EmbeddedBroker, free_port
from store import schema

COMMUNITY = "bench"
BUILDINGS = 20
CLIENT_ID = "sc-bench-alerts"
READY = re.compile(r"pipeline \S+ running")
API_READY = re.compile(r"Uvicorn running|Application startup complete")
START_TIMEOUT_S = 60.0
# Probe period for the last row / the count: the timing resolution of part 1.
PROBE_S = 0.02
# After the last injection, how long stragglers may take before they count as lost.
SETTLE_S = 5.0
# 10:00 in Shanghai: residents up and about, watches worn.
START = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
# QoS 1 messages awaiting PUBACK: enough to hide the round trip (as bench/ingest.py).
PUBLISH_WINDOW = 2_000


# -- the community ------------------------------------------------------------------------


@dataclass(slots=True)
class Fleet:
    devices: list[Device]
    buildings: dict[str, str]
    sos: list[str] = field(default_factory=list)
    spo2: list[str] = field(default_factory=list)
    smoke: list[tuple[str, str, str]] = field(default_factory=list)  # building, a, b


def build_fleet(count: int, incidents: int) -> Fleet:
    devices = demo_devices(community_id=COMMUNITY, count=count, seed=7)
    buildings = {
        d.id: f"b{i % BUILDINGS + 1}" for i, d in enumerate(devices) if d.device_class == "fire"
    }
    fleet = Fleet(devices, buildings)
    for j in range(incidents):
        for kind in ("sos", "spo2"):
            device_id = f"{COMMUNITY}-inc-{kind}-{j:05d}"
            devices.append(Device(id=device_id, community_id=COMMUNITY, device_class="wearable"))
            getattr(fleet, kind).append(device_id)
        building = f"inc-{j:05d}"
        pair = []
        for side in ("a", "b"):
            device_id = f"{COMMUNITY}-inc-smoke-{j:05d}-{side}"
            devices.append(Device(id=device_id, community_id=COMMUNITY, device_class="fire"))
            buildings[device_id] = building
            pair.append(device_id)
        fleet.smoke.append((building, pair[0], pair[1]))
    return fleet


@contextmanager
def fresh_database(server_url: str, fleet: Fleet) -> Iterator[str]:
    with scratch_database(server_url, "sc_bench_alerts") as name:
        url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
        schema.upgrade(url)
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO communities (id, name) VALUES (%s, 'bench')", (COMMUNITY,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO devices (id, community_id, device_class, model,"
                    " expected_interval_s, building) VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (
                            d.id,
                            d.community_id,
                            d.device_class,
                            d.model,
                            d.expected_interval_s,
                            fleet.buildings.get(d.id),
                        )
                        for d in fleet.devices
                    ],
                )
        yield url


class Telemetry:
    """Background telemetry from the simulators, incidents switched off."""

    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = [d for d in devices if "-inc-" not in d.id]
        self.models = [build_model(d, seed=7, incident_scale=0.0) for d in self.devices]
        self.topics = [
            f"community/{COMMUNITY}/{d.device_class}/{d.id}/telemetry" for d in self.devices
        ]

    def message(self, k: int, ts_ms: int) -> tuple[str, bytes, int, str]:
        """Message ``k`` at ``ts_ms``; with its number of metrics and one metric name."""
        i = k % len(self.devices)
        when = datetime.fromtimestamp(ts_ms / 1000, UTC)
        metrics = self.models[i].sample(when).metrics
        payload = telemetry_payload(ts_ms=ts_ms, seq=k, metrics=metrics)
        return self.topics[i], payload, len(metrics), next(iter(metrics))


# -- MQTT helpers -------------------------------------------------------------------------


def _client(url: str, client_id: str) -> mqtt.Client:
    """MQTT 3.1.1, a clean session, no in-flight cap of paho's (Window keeps the count)."""
    return connected_client(url, client_id, clean_start=True, v5=False, max_inflight=0)


class Window:
    """QoS 1 publishing with a bounded number awaiting PUBACK."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.sent = 0
        self.acked = 0
        self._cond = threading.Condition()
        client.on_publish = self._on_publish

    def _on_publish(self, *_args: Any) -> None:
        with self._cond:
            self.acked += 1
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        with self._cond:
            while self.sent - self.acked >= PUBLISH_WINDOW:
                self._cond.wait(1.0)
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BenchError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.sent += 1

    def drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.acked < self.sent:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise BenchError(f"{self.sent - self.acked} publishes not acked in time")


def _env(database_url: str, mqtt_url: str, **extra: str) -> dict[str, str]:
    return clean_env() | {
        "SC_DATABASE_URL": database_url,
        "SC_MQTT_URL": mqtt_url,
        "SC_GATEWAY__CLIENT_ID": CLIENT_ID,
        **extra,
    }


# -- part 1: throughput -------------------------------------------------------------------


def throughput_run(
    rules: bool, fleet: Fleet, messages: int, args: argparse.Namespace, work: Path
) -> tuple[float, int, int]:
    """Drain ``messages`` with the engine on or off; return (msgs/s, alerts, enabled rules)."""
    telemetry = Telemetry(fleet.devices)
    base_ms = int(START.timestamp() * 1000)
    with fresh_database(args.database_url, fleet) as db_url:
        broker = EmbeddedBroker(data_dir=work / f"broker-{secrets.token_hex(3)}", kind="mosquitto")
        mqtt_url = broker.start()
        child: Child | None = None
        try:
            prime_session(mqtt_url, CLIENT_ID, v5=True)
            client = _client(mqtt_url, f"bench-pub-{secrets.token_hex(3)}")
            window = Window(client)
            rows = 0
            last: tuple[str, str, int] = ("", "", 0)
            for k in range(messages):
                ts_ms = base_ms + k
                topic, payload, count, metric = telemetry.message(k, ts_ms)
                window.publish(topic, payload)
                rows += count
                last = (topic.split("/")[3], metric, ts_ms)
            window.drain(args.timeout)
            client.disconnect()
            client.loop_stop()
            env = _env(
                db_url,
                mqtt_url,
                SC_ALERTS__ENABLED=str(rules).lower(),
                SC_INGEST__FLUSH_INTERVAL_MS=str(args.flush_ms),
            )
            child = Child(
                "rules-on" if rules else "rules-off",
                [sys.executable, "-m", "smartcommunity.cli", "run"],
                env,
                READY,
            )
            started = child.wait_ready(START_TIMEOUT_S)
            finished = _wait_rows(db_url, last, rows, child, args.timeout)
            child.stop()
            with psycopg.connect(db_url) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM alerts),"
                    " (SELECT count(*) FROM alert_rules WHERE enabled)"
                ).fetchone()
            assert row is not None
            if rules and not row[1]:
                raise BenchError("rules on, but no rules were installed")
            return messages / (finished - started), int(row[0]), int(row[1])
        finally:
            if child is not None:
                child.stop()
            broker.stop()


def _wait_rows(
    url: str, last: tuple[str, str, int], rows: int, child: Child, timeout_s: float
) -> float:
    device_id, metric, ts_ms = last
    ts = datetime.fromtimestamp(ts_ms / 1000, UTC)
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            found = conn.execute(
                "SELECT 1 FROM readings WHERE device_id = %s AND metric = %s AND ts = %s",
                (device_id, metric, ts),
            ).fetchone()
            if found:
                seen = time.monotonic()
                count = conn.execute("SELECT count(*) FROM readings").fetchone()
                if count and count[0] >= rows:
                    return seen
            child.check_alive()
            time.sleep(PROBE_S)
    raise BenchError(f"not all {rows} rows committed in {timeout_s:.0f}s\n{child.tail()}")


# -- part 2: latency ----------------------------------------------------------------------


@dataclass(slots=True)
class Expected:
    kind: str
    subject: str
    action: str
    published: float
    device: str = ""
    received: float | None = None
    written: float | None = None
    streamed: float | None = None
    mqtt: float | None = None


def latency_run(fleet: Fleet, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    telemetry = Telemetry(fleet.devices)
    with fresh_database(args.database_url, fleet) as db_url:
        broker = EmbeddedBroker(data_dir=work / f"broker-{secrets.token_hex(3)}", kind="mosquitto")
        mqtt_url = broker.start()
        children: list[Child] = []
        stop = threading.Event()
        try:
            with psycopg.connect(db_url) as conn:
                from store.accounts import create_token

                token = create_token(conn, "bench")
            env = _env(db_url, mqtt_url, SC_INGEST__FLUSH_INTERVAL_MS=str(args.flush_ms))
            port = free_port()
            api = Child(
                "api",
                [sys.executable, "-m", "smartcommunity.cli", "api", "--port", str(port)],
                env,
                API_READY,
            )
            children.append(api)
            pipeline = Child(
                "pipeline", [sys.executable, "-m", "smartcommunity.cli", "run"], env, READY
            )
            children.append(pipeline)
            api.wait_ready(START_TIMEOUT_S)
            pipeline.wait_ready(START_TIMEOUT_S)

            streamed: list[tuple[float, dict[str, Any]]] = []
            stream_ready = threading.Event()
            reader = threading.Thread(
                target=read_alert_stream,
                args=(f"http://127.0.0.1:{port}", token, streamed, stream_ready, stop),
                daemon=True,
            )
            reader.start()
            if not stream_ready.wait(10):
                raise BenchError("the live stream did not open")
            heard: list[tuple[float, str, dict[str, Any]]] = []
            listener = _client(mqtt_url, f"bench-sub-{secrets.token_hex(3)}")
            listener.on_message = lambda _c, _u, m: heard.append(
                (time.time(), m.topic, json.loads(m.payload))
            )
            listener.subscribe(f"community/{COMMUNITY}/alerts/#", qos=1)
            time.sleep(0.5)

            background = threading.Thread(
                target=_background, args=(mqtt_url, telemetry, args, stop), daemon=True
            )
            background.start()
            expected = _inject(mqtt_url, fleet, args)
            time.sleep(SETTLE_S)
            stop.set()
            background.join(30)
            listener.disconnect()
            listener.loop_stop()
            _match(db_url, expected, streamed, heard)
            with psycopg.connect(db_url) as conn:
                counts = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE rule_id = 'system.flood') FROM alerts"
                ).fetchone()
                readings = conn.execute("SELECT count(*) FROM readings").fetchone()
            return {
                "expected": expected,
                "alerts": counts,
                "readings": readings[0] if readings else 0,
            }
        finally:
            stop.set()
            for child in reversed(children):
                child.stop()
            broker.stop()


def _background(
    mqtt_url: str, telemetry: Telemetry, args: argparse.Namespace, stop: threading.Event
) -> None:
    client = _client(mqtt_url, f"bench-bg-{secrets.token_hex(3)}")
    window = Window(client)
    interval = 1.0 / args.rate
    began = next_at = time.monotonic()
    k = 0
    while not stop.is_set():
        topic, payload, _, _ = telemetry.message(k, int(time.time() * 1000))
        window.publish(topic, payload)
        k += 1
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    client.disconnect()
    client.loop_stop()
    args.background_sent = k
    args.background_s = time.monotonic() - began


def _on_delay_s(rule_id: str) -> float:
    """How long the shipped pack's threshold rule waits before it raises."""
    rule = next(r for r in load_rules(DEFAULTS_DIR) if r.id == rule_id)
    assert isinstance(rule, ThresholdRule)
    return rule.for_


def _inject(mqtt_url: str, fleet: Fleet, args: argparse.Namespace) -> list[Expected]:
    client = _client(mqtt_url, f"bench-inc-{secrets.token_hex(3)}")
    expected: list[Expected] = []
    spo2_on_delay_s = _on_delay_s("wearable.spo2_low")
    period = 1.0 / args.incidents
    total = int(args.duration * args.incidents)
    started = time.monotonic()

    def send(cls: str, device: str, channel: str, payload: bytes) -> float:
        at = time.time()
        client.publish(f"community/{COMMUNITY}/{cls}/{device}/{channel}", payload, qos=1)
        return at

    for j in range(total):
        time.sleep(max(0.0, started + j * period - time.monotonic()))
        n = j // 3
        now_ms = int(time.time() * 1000)
        kind = ("sos", "spo2", "fire")[j % 3]
        if kind == "sos":
            device = fleet.sos[n]
            payload = event_payload(ts_ms=now_ms, seq=1, event=SimEvent(name="sos_pressed"))
            at = send("wearable", device, "event", payload)
            expected.append(Expected("sos (critical)", f"device:{device}", "raised", at, device))
        elif kind == "spo2":
            device = fleet.spo2[n]
            # The pack's rule raises after an on-delay (time and readings): the first
            # low reading is dated past it, so the second one, timed, raises the alert.
            low = {"spo2": 85.0}
            early = now_ms - int(spo2_on_delay_s * 1000) - 1000
            opening = telemetry_payload(ts_ms=early, seq=1, metrics=low)
            send("wearable", device, "telemetry", opening)
            payload = telemetry_payload(ts_ms=now_ms, seq=2, metrics=low)
            at = send("wearable", device, "telemetry", payload)
            expected.append(Expected("spo2 < 90 (major)", f"device:{device}", "raised", at, device))
        else:
            building, first, second = fleet.smoke[n]
            subject = f"building:{COMMUNITY}/{building}"
            alarm = SimEvent(name="smoke_alarm")
            at = send("fire", first, "event", event_payload(ts_ms=now_ms, seq=1, event=alarm))
            expected.append(Expected("smoke pre-alarm (major)", subject, "raised", at, first))
            time.sleep(0.3)
            later = int(time.time() * 1000)
            at = send("fire", second, "event", event_payload(ts_ms=later, seq=1, event=alarm))
            expected.append(
                Expected("fire confirmed (critical)", subject, "severity_raised", at, second)
            )
    client.disconnect()
    client.loop_stop()
    return expected


def _match(
    db_url: str,
    expected: list[Expected],
    streamed: list[tuple[float, dict[str, Any]]],
    heard: list[tuple[float, str, dict[str, Any]]],
) -> None:
    by_key = {(e.subject, e.action): e for e in expected}
    for at, payload in streamed:
        item = by_key.get((payload.get("subject", ""), payload.get("action", "")))
        if item is not None and item.streamed is None:
            item.streamed = at
    for at, _topic, payload in heard:
        item = by_key.get((payload.get("subject", ""), payload.get("action", "")))
        if item is not None and item.mqtt is None:
            item.mqtt = at
    with psycopg.connect(db_url) as conn:
        for subject, action, written in conn.execute(
            "SELECT a.subject, h.action, extract(epoch FROM h.at)::float8"
            " FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
        ):
            item = by_key.get((subject, action))
            if item is not None:
                item.written = written
        received: dict[str, float] = dict(
            conn.execute(
                "SELECT device_id, extract(epoch FROM min(received_at))::float8 FROM ("
                " SELECT device_id, received_at FROM device_events WHERE device_id LIKE %s"
                " UNION ALL SELECT device_id, received_at FROM readings"
                " WHERE device_id LIKE %s AND metric = 'spo2') AS r GROUP BY device_id",
                (f"{COMMUNITY}-inc-%",) * 2,
            ).fetchall()
        )
        for item in expected:
            item.received = received.get(item.device)


# -- report -------------------------------------------------------------------------------


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "      -       -       -"
    p50, p99 = statistics.median(values), quantile(values, 0.99)
    return f"{p50 * 1000:7.0f} {p99 * 1000:7.0f} {max(values) * 1000:7.0f}"


def report_latency(result: dict[str, Any], args: argparse.Namespace) -> None:
    expected: list[Expected] = result["expected"]
    sent, seconds = getattr(args, "background_sent", 0), getattr(args, "background_s", 0.0)
    print(
        f"\nLatency, rules on: background telemetry at {sent / max(seconds, 1e-9):.0f} msgs/s"
        f" for {seconds:.0f} s ({sent} messages, {result['readings']} rows stored),"
        f" {len(expected)} incident transitions; pipeline flush interval {args.flush_ms} ms"
    )
    print(f"{'':34} {'n':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    kinds = sorted({e.kind for e in expected})
    for label, attr in (
        ("publish -> received by the pipeline", "received"),
        ("publish -> written (alert txn)", "written"),
        ("publish -> live stream (SSE)", "streamed"),
        ("publish -> MQTT alert topic", "mqtt"),
    ):
        values = [getattr(e, attr) - e.published for e in expected if getattr(e, attr)]
        print(f"{label:34} {len(values):>4} {_ms(values)}")
        for kind in kinds:
            some = [
                getattr(e, attr) - e.published
                for e in expected
                if e.kind == kind and getattr(e, attr)
            ]
            if some:
                print(f"  {kind:32} {len(some):>4} {_ms(some)}")
    missing = [e for e in expected if e.streamed is None]
    total, floods = result["alerts"]
    print(
        f"alerts in the database: {total} ({floods} flood group); expected transitions not on"
        f" the stream: {len(missing)}"
    )
    unannounced = [e for e in expected if e.mqtt is None and "critical" in e.kind]
    print(
        f"critical transitions not on MQTT: {len(unannounced)} (non-critical ones may be grouped)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a server where the bench may create and drop databases",
    )  # fmt: skip
    parser.add_argument("--devices", type=int, default=2000, help="background devices")
    parser.add_argument("--messages", type=int, default=100_000, help="part 1 workload")
    parser.add_argument("--repeat", type=int, default=1, help="off/on pairs in part 1")
    parser.add_argument("--rate", type=float, default=1500.0, help="part 2 background msgs/s")
    parser.add_argument("--duration", type=float, default=30.0, help="part 2 seconds")
    parser.add_argument("--incidents", type=float, default=2.0, help="injections a second")
    parser.add_argument("--flush-ms", type=int, default=0, help="SC_INGEST__FLUSH_INTERVAL_MS")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    fleet = build_fleet(args.devices, int(args.duration * args.incidents) // 3 + 1)
    with tempfile.TemporaryDirectory(prefix="sc-bench-alerts-") as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            runs: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeat):
                for rules in (False, True):
                    rate, alerts, active = throughput_run(rules, fleet, args.messages, args, work)
                    runs[rules].append(rate)
                    label = f"on ({active} rules)" if rules else "off"
                    print(f"  rules {label}: {rate:8.0f} msgs/s, {alerts} alerts", file=sys.stderr)
            off, on = statistics.median(runs[False]), statistics.median(runs[True])
            print(
                f"\nIngest throughput, {args.messages} telemetry messages of {args.devices}"
                f" devices (all four classes), drained from a persistent session:"
            )
            print(f"  rules off {off:8.0f} msgs/s")
            print(f"  rules on  {on:8.0f} msgs/s   ratio on/off = {on / off:.2f}")
        if not args.skip_latency:
            report_latency(latency_run(fleet, args, work), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
